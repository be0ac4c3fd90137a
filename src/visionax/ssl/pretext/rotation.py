"""Rotation prediction (Gidaris et al. 2018): every image is shown at 0°, 90°, 180° and 270° and an
encoder with a (linear) head classifies which of the four rotations it sees (4-way softmax).

Telling which way is up needs the object's shape, so the encoder learns features without labels;
without augmentation the task is solved from low-level cues instead (on the 8×8 digits, where a digit
sits in its frame), so each image is first replaced by one random view (crop and colour jitter, as
SimCLR's). The per-device `train_step` is written once and run by `visionax.parallel.DataParallel`
under `shard_map` or `pmap`: each device rotates its local views into a batch of 4 × local_batch,
the BatchNorm is synchronised over the devices (it then sees 4 × global batch), and the loss is
averaged over the devices. The model is `visionax.ssl.heads.ContrastiveModel` (an encoder and
`rotation_head`), the state a plain `visionax.train.state.TrainState` built by `create_train_state`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from visionax.data.augment import ViewSettings, augment_view
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS
from visionax.ssl.heads import ProjectionHead
from visionax.ssl.pretext.step import pretext_classification_step
from visionax.train.state import TrainState

__all__ = ["NUM_ROTATIONS", "RotationSettings", "augmented_images", "check_square", "rotate", "rotation_batch",
           "rotation_head", "train_step", "train_step_on_images"]

NUM_ROTATIONS = 4  # 0°, 90°, 180°, 270°: the label k is the number of quarter turns


@dataclasses.dataclass(frozen=True)
class RotationSettings:
    """The rotation classifier's head: `head_layers` Dense layers (1: linear, as in the paper's
    linear classifier on the encoder), `head_hidden_dim` units with synchronised BatchNorm after
    each hidden one, 4 logits out. Validated here, once."""

    head_layers: int = 1
    head_hidden_dim: int = 128

    def __post_init__(self):
        if self.head_layers < 1 or self.head_hidden_dim < 1:
            raise UserError(f"head_layers={self.head_layers} and head_hidden_dim={self.head_hidden_dim} must be "
                            ">= 1; pass e.g. --config.head_layers=1 (a linear head)")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "RotationSettings":
        return cls(head_layers=config.head_layers, head_hidden_dim=config.head_hidden_dim)


def rotation_head(settings: RotationSettings, *, bn_axis_name: str | None, dtype=jnp.float32) -> ProjectionHead:
    """The 4-way rotation classifier on the encoder's features `[batch, features] → [batch, 4]`, its
    BatchNorm (hidden layers only) synchronised over `bn_axis_name`."""
    return ProjectionHead(hidden_dim=settings.head_hidden_dim, output_dim=NUM_ROTATIONS,
                          num_layers=settings.head_layers, batch_norm=True, bn_axis_name=bn_axis_name, dtype=dtype)


def check_square(image_shape: tuple[int, ...]) -> None:
    """A UserError unless images `[h, w, c]` are square (a quarter turn must keep their shape)."""
    height, width = image_shape[:2]
    if height != width:
        raise UserError(f"rotation prediction needs square images (a 90° turn swaps height and width); the data "
                        f"has {height}×{width} images: choose a dataset of square images (--config.data)")


def rotate(images: jax.Array, quarter_turns: jax.Array) -> jax.Array:
    """Each image `[batch, h, w, c]` (h = w) turned by its own k·90° counter-clockwise, `quarter_turns`
    `[batch]` integers k (taken mod 4): image i becomes `np.rot90(images[i], k_i)` on the (h, w) axes."""
    images = jnp.asarray(images)
    check_square(images.shape[1:])
    turned = jnp.stack([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])  # [4, batch, h, w, c]
    return turned[jnp.asarray(quarter_turns) % NUM_ROTATIONS, jnp.arange(images.shape[0])]


def rotation_batch(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Every image `[batch, h, w, c]` in its four rotations: images `[4·batch, h, w, c]` whose block k
    (rows k·batch … (k+1)·batch − 1) is the batch turned by k·90° counter-clockwise, and labels
    `[4·batch]` (int32) equal to k there."""
    images = jnp.asarray(images)
    check_square(images.shape[1:])
    rotated = jnp.concatenate([jnp.rot90(images, k, axes=(1, 2)) for k in range(NUM_ROTATIONS)])
    labels = jnp.repeat(jnp.arange(NUM_ROTATIONS, dtype=jnp.int32), images.shape[0])
    return rotated, labels


def augmented_images(key: jax.Array, images: jax.Array, settings: ViewSettings,
                     first_index: jax.Array | int = 0) -> jax.Array:
    """One random view (`visionax.data.augment.augment_view`) `[batch, *output_size, c]` of each
    image `[batch, h, w, c]` (uint8 or float in [0, 1]); example i uses the key `fold_in(key,
    first_index + i)`, so a data-parallel step gives every example the view it gets on one device."""
    indices = first_index + jnp.arange(images.shape[0])
    example_keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(indices)
    return jax.vmap(augment_view, in_axes=(0, 0, None))(example_keys, model_input(images), settings)


def train_step(state: TrainState, batch: dict, *, view_settings: ViewSettings | None) -> tuple[TrainState, dict]:
    """One rotation-prediction step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`, h = w).

    With `view_settings` (None: the images as they are), each image is first replaced by one random
    view made with the key `fold_in(state.rng, state.step)` and per-example keys from the global
    example index, so the result does not depend on the number of devices. Returns the new state and
    `{"loss", "rotation_accuracy"}` of the global batch. Bind `view_settings` with
    `functools.partial` and compile with `DataParallel.step`.
    """
    images = model_input(batch["image"])
    if view_settings is not None:
        step_key = jax.random.fold_in(state.rng, state.step)
        first_index = jax.lax.axis_index(DATA_AXIS) * images.shape[0]
        images = augmented_images(step_key, images, view_settings, first_index)
    return train_step_on_images(state, images)


def train_step_on_images(state: TrainState, images: jax.Array) -> tuple[TrainState, dict]:
    """The update of `train_step` given this device's images `[local_batch, h, w, c]` (model input
    range): all four rotations through the model in one batch of 4·local_batch (synchronised
    BatchNorm then sees 4 × global batch), the softmax cross-entropy
    −(1/4N) Σ_i Σ_k log softmax(f(rot_k(x_i)))_k, gradients, metrics and BatchNorm statistics
    averaged over the devices. Metrics: the loss and the rotation accuracy (the fraction of rotated
    images whose quarter turns the head predicts)."""
    rotated, labels = rotation_batch(images)

    return pretext_classification_step(state, rotated, labels, "rotation_accuracy")
