"""Relative patch position (Doersch et al. 2015): a centre patch and one of its 8 neighbours on a 3×3
grid of patches, and a siamese encoder with a small head tells which of the 8 neighbours it is
(8-way softmax).

Telling where the eye sits relative to the nose needs the object's parts, so the encoder learns
features without labels. Two shortcuts are closed as in the paper: a `gap` between the patches and a
random `jitter` of each patch (no continuing edges or textures across the border), and per-patch
colour dropping on RGB images (chromatic aberration tells where a patch was in the lens). The label
order is row-major over the 3×3 grid, skipping the centre:

    0 1 2
    3 · 4
    5 6 7

The per-device `train_step` is written once and run by `visionax.parallel.DataParallel` under
`shard_map` or `pmap`: each device cuts its local images into pairs with per-example keys from the
global example index, the shared encoder embeds both patches of every pair in one batch of
2 × local_batch (BatchNorm synchronised over the devices), and the loss is averaged over the
devices. The representation evaluated afterwards is the encoder on the whole image
(`RelativePositionModel.embed`), so the encoder must pool (the conv encoders do).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS
from visionax.ssl.heads import ContrastiveModel, ProjectionHead
from visionax.ssl.pretext.step import pretext_classification_step
from visionax.train.state import TrainState

__all__ = ["NEIGHBOUR_OFFSETS", "NUM_POSITIONS", "RelativePositionModel", "RelativePositionSettings",
           "drop_colours", "extract_patch", "patch_layout", "patch_pair", "patch_pairs", "position_head",
           "train_step", "train_step_on_pairs"]

# The (row, column) grid step from the centre patch to the neighbour of label k (row-major, centre skipped).
NEIGHBOUR_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
NUM_POSITIONS = len(NEIGHBOUR_OFFSETS)


@dataclasses.dataclass(frozen=True)
class RelativePositionSettings:
    """The 3×3 patch grid and the classifier's head. Neighbouring patches' nominal corners are
    `pitch` = patch_size + gap + jitter pixels apart and each patch moves by its own random 0..jitter
    pixels down and right, so two neighbours are always at least `gap` (at most gap + 2·jitter)
    pixels apart; the grid then spans `extent` = 3·patch_size + 2·gap + 3·jitter pixels and sits at
    a random place in the image. `colour_dropping`: on RGB images each patch keeps one random channel
    and the other two become mid-grey noise 0.5 + `drop_noise`·N(0, 1) (model input range [0, 1]).
    The head: `head_layers` Dense layers on the concatenated features of both patches,
    `head_hidden_dim` units with synchronised BatchNorm after each hidden one, 8 logits out.
    Validated here, once."""

    patch_size: int = 2
    gap: int = 1
    jitter: int = 0
    colour_dropping: bool = True
    drop_noise: float = 0.01
    head_layers: int = 2
    head_hidden_dim: int = 128

    def __post_init__(self):
        if self.patch_size < 1 or self.gap < 0 or self.jitter < 0:
            raise UserError(f"patch_size={self.patch_size} must be >= 1, gap={self.gap} and jitter={self.jitter} "
                            ">= 0; pass e.g. --config.patch_size=2 --config.gap=1 --config.jitter=0")
        if self.drop_noise < 0:
            raise UserError(f"drop_noise={self.drop_noise} must be >= 0; pass e.g. --config.drop_noise=0.01")
        if self.head_layers < 1 or self.head_hidden_dim < 1:
            raise UserError(f"head_layers={self.head_layers} and head_hidden_dim={self.head_hidden_dim} must be "
                            ">= 1; pass e.g. --config.head_layers=2")

    @property
    def pitch(self) -> int:
        """Pixels between the nominal top-left corners of two neighbouring patches."""
        return self.patch_size + self.gap + self.jitter

    @property
    def extent(self) -> int:
        """Pixels the 3×3 grid spans per side: 2·pitch + patch_size + jitter."""
        return 2 * self.pitch + self.patch_size + self.jitter

    def check_fits(self, image_shape: tuple[int, ...]) -> None:
        """A UserError unless the grid fits in images `[h, w, c]`, naming the patch sizes that fit."""
        size = min(image_shape[:2])
        if self.extent > size:
            largest = (size - 2 * self.gap - 3 * self.jitter) // 3
            fits = (f"patch_size <= {largest} fits with this gap and jitter" if largest >= 1 else
                    "no patch_size fits with this gap and jitter: lower them")
            raise UserError(
                f"the 3×3 patch grid spans 3·patch_size + 2·gap + 3·jitter = 3·{self.patch_size} + 2·{self.gap} "
                f"+ 3·{self.jitter} = {self.extent} pixels, more than the {image_shape[0]}×{image_shape[1]} "
                f"images: {fits} (--config.patch_size, --config.gap, --config.jitter)")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "RelativePositionSettings":
        return cls(patch_size=config.patch_size, gap=config.gap, jitter=config.jitter,
                   colour_dropping=config.colour_dropping, drop_noise=config.drop_noise,
                   head_layers=config.head_layers, head_hidden_dim=config.head_hidden_dim)


def position_head(settings: RelativePositionSettings, *, bn_axis_name: str | None,
                  dtype=jnp.float32) -> ProjectionHead:
    """The 8-way classifier on both patches' concatenated features `[batch, 2·features] → [batch, 8]`,
    its BatchNorm (hidden layers only) synchronised over `bn_axis_name`."""
    return ProjectionHead(hidden_dim=settings.head_hidden_dim, output_dim=NUM_POSITIONS,
                          num_layers=settings.head_layers, batch_norm=True, bn_axis_name=bn_axis_name, dtype=dtype)


class RelativePositionModel(ContrastiveModel):
    """The siamese model: `__call__` takes pairs `[batch, 2, p, p, c]` (centre, neighbour), runs the
    shared `encoder` on all 2·batch patches at once and `head` on [f(centre), f(neighbour)]
    `[batch, 2·features]`, giving logits `[batch, 8]`; `embed` is the encoder on whole images."""

    def __call__(self, pairs: jax.Array, train: bool = False) -> jax.Array:
        batch = pairs.shape[0]
        features = self.encoder(pairs.reshape(batch * 2, *pairs.shape[2:]), train=train)  # pair i: rows 2i, 2i+1
        return self.head(features.reshape(batch, -1), train=train)


def patch_layout(key: jax.Array, image_shape: tuple[int, ...],
                 settings: RelativePositionSettings) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One random layout in images `[h, w, c]`: the centre patch's and the neighbour's top-left
    corners `[2]` (row, column; int32) and the label in 0..7 (int32, uniform). The grid's corner is
    uniform in [0, h − extent] × [0, w − extent], each patch adds its own uniform 0..jitter per axis
    to its nominal corner grid + (1 + offset)·pitch."""
    settings.check_fits(image_shape)
    grid_key, label_key, jitter_key = jax.random.split(key, 3)
    room = jnp.array([image_shape[0] - settings.extent, image_shape[1] - settings.extent])
    grid = jax.random.randint(grid_key, (2,), 0, room + 1, dtype=jnp.int32)
    label = jax.random.randint(label_key, (), 0, NUM_POSITIONS, dtype=jnp.int32)
    jitters = jax.random.randint(jitter_key, (2, 2), 0, settings.jitter + 1, dtype=jnp.int32)
    offset = jnp.asarray(NEIGHBOUR_OFFSETS, jnp.int32)[label]
    centre = grid + settings.pitch + jitters[0]
    neighbour = grid + (1 + offset) * settings.pitch + jitters[1]
    return centre, neighbour, label


def extract_patch(image: jax.Array, corner: jax.Array, patch_size: int) -> jax.Array:
    """`image[row:row + patch_size, column:column + patch_size]` `[p, p, c]` of an image `[h, w, c]`,
    `corner` = (row, column) (traced)."""
    return jax.lax.dynamic_slice(image, (corner[0], corner[1], jnp.zeros_like(corner[0])),
                                 (patch_size, patch_size, image.shape[2]))


def drop_colours(key: jax.Array, patch: jax.Array, noise: float) -> jax.Array:
    """Colour dropping of one patch `[p, p, c]` (model input range): with c = 3, one uniformly chosen
    channel is kept and the other two become 0.5 + noise·N(0, 1); with any other c (1-channel
    digits) the patch is returned unchanged, there being no colour to drop."""
    if patch.shape[-1] != 3:
        return patch
    channel_key, noise_key = jax.random.split(key)
    kept = jax.random.randint(channel_key, (), 0, 3)
    filler = 0.5 + noise * jax.random.normal(noise_key, patch.shape, patch.dtype)
    return jnp.where(jnp.arange(3) == kept, patch, filler)


def patch_pair(key: jax.Array, image: jax.Array, settings: RelativePositionSettings) -> tuple[jax.Array, jax.Array]:
    """One example of the task from one image `[h, w, c]` (model input range): the pair `[2, p, p, c]`
    (centre, neighbour) of `patch_layout(layout_key)` with colour dropping when on, and its label."""
    layout_key, centre_key, neighbour_key = jax.random.split(key, 3)
    centre_corner, neighbour_corner, label = patch_layout(layout_key, image.shape, settings)
    patches = [extract_patch(image, corner, settings.patch_size) for corner in (centre_corner, neighbour_corner)]
    if settings.colour_dropping:
        patches = [drop_colours(patch_key, patch, settings.drop_noise)
                   for patch_key, patch in zip((centre_key, neighbour_key), patches)]
    return jnp.stack(patches), label


def patch_pairs(key: jax.Array, images: jax.Array, settings: RelativePositionSettings,
                first_index: jax.Array | int = 0) -> tuple[jax.Array, jax.Array]:
    """`patch_pair` of every image `[batch, h, w, c]`: pairs `[batch, 2, p, p, c]` and labels `[batch]`;
    example i uses the key `fold_in(key, first_index + i)`, so a data-parallel step gives every
    example the pair it gets on one device."""
    indices = first_index + jnp.arange(images.shape[0])
    example_keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(indices)
    return jax.vmap(patch_pair, in_axes=(0, 0, None))(example_keys, images, settings)


def train_step(state: TrainState, batch: dict, *, settings: RelativePositionSettings) -> tuple[TrainState, dict]:
    """One relative-position step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`).

    Each image gives one pair made with the key `fold_in(state.rng, state.step)` and per-example keys
    from the global example index, so the result does not depend on the number of devices. Returns
    the new state and `{"loss", "position_accuracy"}` of the global batch. Bind `settings` with
    `functools.partial` and compile with `DataParallel.step`.
    """
    images = model_input(batch["image"])
    step_key = jax.random.fold_in(state.rng, state.step)
    first_index = jax.lax.axis_index(DATA_AXIS) * images.shape[0]
    pairs, labels = patch_pairs(step_key, images, settings, first_index)
    return train_step_on_pairs(state, pairs, labels)


def train_step_on_pairs(state: TrainState, pairs: jax.Array, labels: jax.Array) -> tuple[TrainState, dict]:
    """The update of `train_step` given this device's pairs `[local_batch, 2, p, p, c]` and labels
    `[local_batch]`: the softmax cross-entropy −(1/N) Σ_i log softmax(g([f(c_i), f(n_i)]))_{y_i},
    gradients, metrics and BatchNorm statistics averaged over the devices (the encoder's synchronised
    BatchNorm sees 2 × global batch patches). Metrics: the loss and the position accuracy (the
    fraction of pairs whose neighbour position the head predicts)."""

    return pretext_classification_step(state, pairs, labels, "position_accuracy")
