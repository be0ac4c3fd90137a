"""Split-brain autoencoder (Zhang, Isola, Efros 2017): an image in CIE L*a*b* (`visionax.data.color`)
is split channel-wise and each half predicts the other, densely. The predictions lie on a P × P grid
(`prediction_size`, 8), each for a block of (h/P) × (w/P) pixels whose target is the block's mean
L*a*b*: every pixel of the 8×8 digits, every 4×4 block of CIFAR-10 (Zhang et al.'s quarter
resolution; 484 classes at every one of 32 × 32 pixels made a CPU step of the 30-minute encoder
about 10× slower). F1 sees L* and classifies the (a*, b*) of every block into the cells of
`quantize_ab`'s grid; F2 sees (a*, b*) and classifies the L* of every block into
`quantize_lightness`'s bins: L = L_ab + L_L, each a softmax cross-entropy over the grid
−(1/NP²) Σ_{n,y,x} log softmax(F(x_n)_{y,x})_{q(n,y,x)} with q the block's bin (no class
rebalancing). The two networks share nothing, so summing the losses trains each on its own. The
representation is the two networks' pooled features concatenated, [F1(L*), F2(a*b*)].

Networks (`PixelClassifier`): the config's encoder at half its channels (`half_width`: Zhang et al.
split one network channel-wise, so the concatenation has the dimension of the other methods'
encoder) and a light per-pixel decoder from the encoder's last feature map (a learned sub-pixel
upsampling to the prediction grid, ReLU, a 1×1 convolution to the classes). ResNet-18 with the CIFAR
stem ends in a 1×1 map on the 8×8 digits and in a 4×4 map on 32×32 images; small_cnn's map is half
the image's size. Networks take L*/100 and (a*, b*)/100 (`network_input`).

Grayscale data (the embedded digits, one channel) has a*b* = 0 everywhere: "ab from L" would have
nothing to predict and "L from ab" no input. Such images become *tinted digits* (`lab_images`),
made in L*a*b* directly: L* is the grey level g's own lightness, (a*, b*) = 40 · g · (cos θ, sin θ),
a chroma growing with the stroke's grey level and a hue θ drawn for every example at every step
from the key fold_in(hue key, global example index), so 8 devices give the numbers of 1
(`random_hues`); features for evaluation use the one hue `EVALUATION_HUE`. (Some of these colours
lie outside the sRGB gamut; they are never converted back.) The hue is independent of the digit,
so F1 learns where the strokes are and how strong their colour is (the hue it cannot know), F2
reads the digit from its chroma and predicts its lightness: a stand-in for the natural-image task,
where a colour follows from what the object is; colour data (the CIFAR-10 folder) is used as it is,
the paper's setting. Tinting in RGB instead (rgb = g · a colour of random hue) moves L* with the
tint's luminance (blue strokes are darker than yellow ones), so F1's input and F2's target carry
the tint: on the digits it gave kNN 79.4% / probe 91.9% against 90.3% / 95.0% for the L*a*b* tint.

The per-device `train_step` is written once and run by `visionax.parallel.DataParallel`: the
images as they are (no views: the targets are their colours, and no shortcut needs hiding), hues
from per-example keys, BatchNorm synchronised over the devices, gradients, metrics and statistics
averaged over `DATA_AXIS`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from visionax.data.color import ab_bin_centers, quantize_ab, quantize_lightness, rgb_to_lab
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.evaluate.classification import accuracy
from visionax.losses.classification import softmax_cross_entropy
from visionax.models.common import FEATURE_MAP
from visionax.parallel import DATA_AXIS
from visionax.train.state import TrainState

__all__ = ["EVALUATION_HUE", "PixelClassifier", "SplitBrainModel", "SplitBrainSettings", "TINT_CHROMA",
           "check_channels", "embed", "half_width", "lab_images", "lab_targets", "network_input",
           "pixel_cross_entropy", "random_hues", "split_brain_logits", "split_brain_model", "train_step",
           "train_step_on_lab", "upsampling"]

TINT_CHROMA = 40.0  # C* = √(a*² + b*²) of a tinted grey pixel at g = 1
EVALUATION_HUE = 0.0  # θ of the grey images whose features are evaluated: a* = 40·g, b* = 0 (reddish)
LAB_SCALE = 100.0  # network input: L*/100 in [0, 1], a*b*/100 in about [-1, 1]


@dataclasses.dataclass(frozen=True)
class SplitBrainSettings:
    """The classes of the two predictions: L* into `lightness_bins` equal bins of [0, 100]; (a*, b*)
    into the square cells of side `ab_grid_size` over [-ab_range, ab_range)² (Zhang et al.: cells of
    10 over ±110, 484 classes of which 313 hold sRGB colours); `head_hidden_dim` channels per pixel
    in the decoders (`PixelClassifier`); predictions on a `prediction_size` × `prediction_size` grid.
    Validated here, once."""

    lightness_bins: int = 100
    ab_grid_size: float = 10.0
    ab_range: float = 110.0
    head_hidden_dim: int = 32
    prediction_size: int = 8

    def __post_init__(self):
        if int(self.lightness_bins) != self.lightness_bins or self.lightness_bins < 2:
            raise UserError(f"lightness_bins={self.lightness_bins} must be an integer >= 2; "
                            "pass e.g. --config.lightness_bins=100")
        if int(self.prediction_size) != self.prediction_size or self.prediction_size < 1:
            raise UserError(f"prediction_size={self.prediction_size} must be an integer >= 1; "
                            "pass e.g. --config.prediction_size=8 (an 8×8 grid of predictions)")
        if self.head_hidden_dim < 1:
            raise UserError(f"head_hidden_dim={self.head_hidden_dim} must be >= 1; "
                            "pass e.g. --config.head_hidden_dim=32")
        try:
            ab_bin_centers(self.ab_grid_size, self.ab_range)
        except UserError as error:
            raise UserError(f"{error} (--config.ab_grid_size, --config.ab_range)") from None

    @property
    def ab_bins(self) -> int:
        """The number of (a*, b*) classes, (2 · ab_range / ab_grid_size)²."""
        return round(2 * self.ab_range / self.ab_grid_size) ** 2

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "SplitBrainSettings":
        return cls(lightness_bins=config.lightness_bins, ab_grid_size=config.ab_grid_size,
                   ab_range=config.ab_range, head_hidden_dim=config.head_hidden_dim,
                   prediction_size=config.prediction_size)


def half_width(model: str, model_options: Mapping) -> dict:
    """The options that give encoder `model` half the channels of `model_options`: `width` halved
    (ResNets) or every entry of `widths` halved (small_cnn); a UserError if there is neither or a
    width is odd."""
    if "width" in model_options:
        name, widths = "width", (model_options["width"],)
    elif "widths" in model_options:
        name, widths = "widths", tuple(model_options["widths"])
    else:
        raise UserError(f"split-brain halves the encoder's channels through model_options.width (ResNets) or "
                        f"model_options.widths (small_cnn); {model} has neither: choose --config.model=resnet18")
    if any(width % 2 or width < 2 for width in widths):
        raise UserError(f"split-brain halves the encoder's channels: model_options.{name}={model_options[name]} "
                        f"must be even and >= 2: pass even --config.model_options.{name}")
    halves = tuple(width // 2 for width in widths)
    return {name: halves[0] if name == "width" else halves}


def check_channels(image_shape: tuple[int, ...]) -> None:
    """A UserError unless images `[h, w, c]` are RGB (c = 3) or grayscale (c = 1, tinted)."""
    if image_shape[-1] not in (1, 3):
        raise UserError(f"split-brain needs RGB (3 channels) or grayscale (1 channel) images; the data has "
                        f"{image_shape[-1]} channels: choose another dataset (--config.data)")


def random_hues(key: jax.Array, first_index: jax.Array | int, count: int) -> jax.Array:
    """`count` hue angles `[count]` in [0, 2π): hue i = 2π·u, u ~ U[0, 1) drawn with the key
    fold_in(key, first_index + i)."""
    indices = first_index + jnp.arange(count)
    return 2 * jnp.pi * jax.vmap(lambda index: jax.random.uniform(jax.random.fold_in(key, index)))(indices)


def lab_images(images: jax.Array, hues: jax.Array) -> jax.Array:
    """CIE L*a*b* `[batch, h, w, 3]` of float `images` `[batch, h, w, c]` in [0, 1]: colour images
    (c = 3) through `rgb_to_lab`; grey ones (c = 1) tinted: L* of the grey level g (`rgb_to_lab` of
    (g, g, g)) and (a*, b*) = TINT_CHROMA · g · (cos θ, sin θ) with θ = `hues` `[batch]`."""
    if images.shape[-1] == 3:
        return rgb_to_lab(images)
    lightness = rgb_to_lab(jnp.repeat(images, 3, axis=-1))[..., :1]
    direction = jnp.stack([jnp.cos(hues), jnp.sin(hues)], axis=-1).astype(images.dtype)
    return jnp.concatenate([lightness, TINT_CHROMA * images * direction[:, None, None, :]], axis=-1)


def network_input(lab: jax.Array) -> jax.Array:
    """The networks' input `[..., 3]` from L*a*b* `lab` `[..., 3]`: (L*, a*, b*) / 100."""
    return lab / LAB_SCALE


def lab_targets(lab: jax.Array, settings: SplitBrainSettings) -> tuple[jax.Array, jax.Array]:
    """The classes of `lab` `[batch, h, w, 3]` averaged over the blocks of (h/P) × (w/P) pixels of a
    P × P grid (P = `settings.prediction_size`; P = h = w: every pixel): (a*b* targets of F1 =
    `quantize_ab` of the blocks' mean a*b*, L* targets of F2 = `quantize_lightness` of their mean
    L*), both int32 `[batch, P, P]`."""
    size = settings.prediction_size
    batch, height, width, _ = lab.shape
    blocks = lab.reshape(batch, size, height // size, size, width // size, 3).mean(axis=(2, 4))
    return (quantize_ab(blocks[..., 1:], settings.ab_grid_size, settings.ab_range),
            quantize_lightness(blocks[..., 0], settings.lightness_bins))


class PixelClassifier(nn.Module):
    """An encoder and a light per-pixel decoder: inputs `[batch, h, w, c]` → logits `[batch, P, P,
    num_classes]` (at least float32) on the P × P prediction grid.

    The encoder's last feature map `[batch, h', w', C]` (the map a zoo model sows as
    `intermediates/feature_map`, as `visionax.models.captioners.encode` reads it) is upsampled by a
    learned sub-pixel convolution: a 1×1 convolution to s_h·s_w·`hidden_dim` channels rearranged
    into s_h × s_w predictions per map cell (depth to space, `upsample` = (s_h, s_w) = (P/h', P/w')),
    then ReLU and a 1×1 convolution to the classes: logits_{y,x} = W₂ relu(W₁^{(y mod s_h, x mod s_w)}
    f_{⌊y/s_h⌋,⌊x/s_w⌋} + b₁) + b₂. On the 8×8 digits ResNet-18 with the CIFAR stem ends in a 1×1 map,
    so every pixel is decoded from the pooled features with its own weights (an autoencoder's
    decoder); a bilinear upsampling of a 1×1 map predicts one class distribution for the whole
    image, and in a first trial its features fell far below a random encoder's. The map is there
    only when "intermediates" is mutable (apply through `split_brain_logits`); while initialising,
    the pooled features (the map's mean, the same channels) stand in for it. `embed` gives the pooled
    features `[batch, C]`.
    """

    encoder: nn.Module
    num_classes: int
    upsample: tuple[int, int]
    hidden_dim: int = 32
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
        pooled = self.encoder(inputs, train=train)
        if self.is_initializing():
            feature_map = pooled[:, None, None, :]
        elif not self.is_mutable_collection("intermediates"):
            raise ValueError("PixelClassifier reads its encoder's feature map from the 'intermediates' collection: "
                             "apply with mutable=['intermediates', ...] (split_brain_logits does)")
        else:
            feature_map = self.encoder.variables["intermediates"][FEATURE_MAP][-1]
        batch, map_height, map_width, _ = feature_map.shape
        (up_height, up_width), hidden_dim = self.upsample, self.hidden_dim
        x = nn.Dense(up_height * up_width * hidden_dim, dtype=self.dtype, name="upsample")(feature_map)
        x = x.reshape(batch, map_height, map_width, up_height, up_width, hidden_dim).transpose(0, 1, 3, 2, 4, 5)
        x = nn.relu(x.reshape(batch, map_height * up_height, map_width * up_width, hidden_dim))
        logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x)
        return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))

    def embed(self, inputs: jax.Array) -> jax.Array:
        return self.encoder(inputs, train=False)


class SplitBrainModel(nn.Module):
    """F1 = `lightness_network` (L* → a*b* classes) and F2 = `colour_network` (a*b* → L* classes) on
    the network input `[batch, h, w, 3]` of `network_input`: `__call__` gives (a*b* logits
    `[batch, P, P, ab_bins]`, L* logits `[batch, P, P, lightness_bins]` on the P × P prediction grid),
    `embed` the representation [F1's pooled features, F2's] `[batch, C1 + C2]` (evaluation mode)."""

    lightness_network: PixelClassifier
    colour_network: PixelClassifier

    def __call__(self, inputs: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        return self.lightness_network(inputs[..., :1], train=train), self.colour_network(inputs[..., 1:], train=train)

    def embed(self, inputs: jax.Array) -> jax.Array:
        return jnp.concatenate([self.lightness_network.embed(inputs[..., :1]),
                                self.colour_network.embed(inputs[..., 1:])], axis=-1)


def upsampling(encoder: nn.Module, image_shape: tuple[int, ...], prediction_size: int) -> tuple[int, int]:
    """(P/h', P/w'): how many predictions of the P × P grid (P = `prediction_size`) over images `[h,
    w, c]` each cell of `encoder`'s last feature map `[h', w']` decodes (shapes only, nothing runs);
    a UserError if the encoder sows no map or the sizes do not divide."""
    def feature_map(images):
        _, variables = encoder.init_with_output(jax.random.key(0), images, mutable=True)
        return variables.get("intermediates", {}).get(FEATURE_MAP)

    sown = jax.eval_shape(feature_map, jax.ShapeDtypeStruct((1, *image_shape), jnp.float32))
    if sown is None:
        raise UserError(f"{type(encoder).__name__} has no spatial feature map for split-brain's per-pixel decoder; "
                        "use a convolutional zoo model that ends in global pooling (small_cnn, a ResNet)")
    (height, width), (map_height, map_width) = image_shape[:2], sown[-1].shape[1:3]
    if height % prediction_size or width % prediction_size:
        raise UserError(f"a {prediction_size}×{prediction_size} grid of predictions does not divide the {height}×"
                        f"{width} images into blocks: pass a divisor of both, e.g. --config.prediction_size={height}")
    if prediction_size % map_height or prediction_size % map_width:
        raise UserError(f"split-brain decodes its {prediction_size}×{prediction_size} predictions from the "
                        f"encoder's {map_height}×{map_width} feature map, which does not divide them: choose "
                        f"a multiple of it (--config.prediction_size)")
    return prediction_size // map_height, prediction_size // map_width


def split_brain_model(encoder: nn.Module, settings: SplitBrainSettings, image_shape: tuple[int, ...], *,
                      dtype=jnp.float32) -> SplitBrainModel:
    """Two `PixelClassifier`s with their own copies of `encoder` (nothing shared) for images `[h, w,
    c]`: F1 on L* with `settings.ab_bins` classes, F2 on a*b* with `settings.lightness_bins`, each
    predicting on the `settings.prediction_size`² grid."""
    upsample = upsampling(encoder, (*image_shape[:2], 1), settings.prediction_size)
    return SplitBrainModel(
        lightness_network=PixelClassifier(encoder.clone(), settings.ab_bins, upsample, settings.head_hidden_dim,
                                          dtype),
        colour_network=PixelClassifier(encoder.clone(), settings.lightness_bins, upsample, settings.head_hidden_dim,
                                       dtype))


def split_brain_logits(apply_fn, variables: dict, inputs: jax.Array, *, train: bool
                       ) -> tuple[tuple[jax.Array, jax.Array], dict]:
    """`apply_fn` (a `SplitBrainModel`'s apply) on `inputs` `[batch, h, w, 3]` with the encoders'
    feature maps collected: ((a*b* logits, L* logits) `[batch, P, P, classes]`, the updated
    `batch_stats`, {} unless `train`)."""
    logits, updates = apply_fn(variables, inputs, train=train,
                               mutable=["intermediates"] + (["batch_stats"] if train else []))
    return logits, updates.get("batch_stats", {})


def pixel_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Dense softmax cross-entropy −(1/Nhw) Σ_{n,y,x} log softmax(logits_{n,y,x})_{targets_{n,y,x}}
    of `logits` `[batch, h, w, classes]` and integer `targets` `[batch, h, w]`."""
    return softmax_cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def embed(model: SplitBrainModel, variables: dict, images: jax.Array) -> jax.Array:
    """The representation `[batch, C1 + C2]` of uint8 images `[batch, h, w, c]`: `model_input`,
    grey images tinted with the hue `EVALUATION_HUE`, L*a*b*, `SplitBrainModel.embed` (evaluation mode):
    what the kNN monitor, the linear probe and saved embeddings use."""
    images = model_input(images)
    inputs = network_input(lab_images(images, jnp.full(images.shape[0], EVALUATION_HUE)))
    return model.apply(variables, inputs, method=SplitBrainModel.embed)


def train_step(state: TrainState, batch: dict, *, settings: SplitBrainSettings) -> tuple[TrainState, dict]:
    """One split-brain step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`, c = 1 or 3):
    the images as they are in L*a*b* (`lab_images`; grey ones tinted with `random_hues` from the key
    fold_in(state.rng, state.step) and the global example index, so the result does not depend on
    the number of devices), then `train_step_on_lab`. Bind `settings` with `functools.partial` and
    compile with `DataParallel.step`."""
    images = model_input(batch["image"])
    first_index = jax.lax.axis_index(DATA_AXIS) * images.shape[0]
    hues = random_hues(jax.random.fold_in(state.rng, state.step), first_index, images.shape[0])
    return train_step_on_lab(state, lab_images(images, hues), settings)


def train_step_on_lab(state: TrainState, lab: jax.Array, settings: SplitBrainSettings) -> tuple[TrainState, dict]:
    """The update of `train_step` given this device's L*a*b* images `lab` `[local_batch, h, w, 3]`:
    L = L_ab + L_L (`pixel_cross_entropy` of F1's a*b* logits and of F2's L* logits against
    `lab_targets`), gradients, BatchNorm statistics and metrics averaged over the devices. Metrics:
    `loss`, `ab_loss`, `lightness_loss` and the fractions of predictions right, `ab_accuracy` and
    `lightness_accuracy`."""
    inputs = network_input(lab)
    ab_targets, lightness_targets = lab_targets(lab, settings)

    def loss_fn(params):
        (ab_logits, lightness_logits), batch_stats = split_brain_logits(
            state.apply_fn, {**state.variables, "params": params}, inputs, train=True)
        ab_loss = pixel_cross_entropy(ab_logits, ab_targets)
        lightness_loss = pixel_cross_entropy(lightness_logits, lightness_targets)
        return ab_loss + lightness_loss, (ab_loss, lightness_loss, ab_logits, lightness_logits, batch_stats)

    (loss, (ab_loss, lightness_loss, ab_logits, lightness_logits, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)
    metrics = jax.lax.pmean({
        "loss": loss, "ab_loss": ab_loss, "lightness_loss": lightness_loss,
        "ab_accuracy": accuracy(ab_logits.reshape(-1, settings.ab_bins), ab_targets.reshape(-1)),
        "lightness_accuracy": accuracy(lightness_logits.reshape(-1, settings.lightness_bins),
                                       lightness_targets.reshape(-1)),
    }, DATA_AXIS)
    return state.apply_gradients(grads, batch_stats=batch_stats), metrics
