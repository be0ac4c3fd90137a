"""Context encoder inpainting (Pathak et al. 2016): an encoder sees an image whose region M is blanked
out, a decoder paints the region back, and a discriminator judges the completed images;
L = L_recon + λ·L_adv with L_recon = ‖M ⊙ (x − F((1 − M) ⊙ x))‖².

* The region M `[h, w, 1]` (1 inside, 0 outside) is a ⌊h/2⌋ × ⌊w/2⌋ rectangle, about a quarter of the
  image: at the centre (`mask="center"`, Pathak's central block) or at a uniformly random position
  drawn for each image from the step's key and the image's global index (`mask="random"`, one block
  per image; Pathak's random blocks are several smaller ones covering up to a quarter).
* The encoder's input (1 − M) ⊙ x + M ⊙ fill fills the region with the training set's per-channel
  mean (`fill="mean"`, as Pathak's code does) or with 0 (`fill="zero"`), images in the model-input
  range [0, 1].
* F = decoder ∘ encoder: the encoder is the config's backbone, whose pooled features `[batch,
  features]` are the representation; the decoder (`Decoder`) is DCGAN's generator
  (`visionax.generative.gan.Generator`) fed with those features: a dense layer to a small map — what
  Pathak's channel-wise fully connected bottleneck amounts to on a pooled vector — and stride-2
  transposed convolutions up to the image, its tanh read as (y + 1)/2 ∈ [0, 1].
* L_recon is the squared error summed over the pixels and channels of the region and averaged over
  the batch: (1/N) Σ_i Σ_{p,c} M_ip (x_ipc − F_ipc)². (Pathak et al. weigh by 0.999 the mean over the
  masked values of images in [−1, 1], against λ = 0.001; the sum here, in [0, 1], is (masked values)/4
  times that mean: 4 times on the 8×8 digits, 192 times on 32×32 colour images, so the same λ weighs
  the adversarial term that much less.)
* L_adv is the non-saturating generator loss −E log D(x̂) of a DCGAN discriminator
  (`visionax.generative.gan.Discriminator`, images in [−1, 1]) on the completed images
  x̂ = (1 − M) ⊙ x + M ⊙ F(…); the discriminator minimises −E log D(x) − E log(1 − D(x̂))
  (`visionax.losses.adversarial`).

The per-device `train_step` alternates the two players as DCGAN does: one discriminator update on the
real and the completed images (the completions are constants there), then one encoder-decoder update
against the updated discriminator, the decoder's output computed once for both. With
`adversarial_weight` = 0 the discriminator is left out: its parameters and optimizer state are never
updated. The state (`ContextEncoderState`) is a `TrainState` of the encoder-decoder with the
discriminator's parameters and optimizer state added, so it is one pytree that the training loop
checkpoints and the representation evaluation reads as any other self-supervised state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from visionax import registry
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.generative.gan import Generator
from visionax.losses.adversarial import discriminator_loss, generator_loss
from visionax.parallel import DATA_AXIS
from visionax.train.state import TrainState

__all__ = ["MASKS", "FILLS", "ContextEncoderSettings", "Decoder", "ContextEncoderState", "add_discriminator",
           "mask_size", "center_mask", "random_corners", "rectangle_masks", "region_masks", "fill_values",
           "masked_input", "complete", "reconstruction_loss", "context_encoder_loss", "train_step",
           "train_step_on_images"]

MASKS = ("center", "random")
FILLS = ("mean", "zero")


@dataclasses.dataclass(frozen=True)
class ContextEncoderSettings:
    """The task: where the region is (`mask`: "center" or "random"), what fills it in the encoder's
    input (`fill`: "mean" or "zero") and λ = `adversarial_weight` (0: no discriminator). Validated
    here, once."""

    mask: str = "random"
    fill: str = "mean"
    adversarial_weight: float = 0.001

    def __post_init__(self):
        registry.lookup(dict.fromkeys(MASKS), self.mask, "mask")
        registry.lookup(dict.fromkeys(FILLS), self.fill, "fill")
        if not self.adversarial_weight >= 0:
            raise UserError(f"adversarial_weight={self.adversarial_weight} must be >= 0 (0: no discriminator); "
                            "pass e.g. --config.adversarial_weight=0.001")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "ContextEncoderSettings":
        return cls(mask=config.mask, fill=config.fill, adversarial_weight=config.adversarial_weight)


class Decoder(nn.Module):
    """Features `[batch, features]` → predicted images `[batch, *image_shape]` in [0, 1]: DCGAN's
    generator (dense to a `[h/2ᴸ, w/2ᴸ, widths[0]]` map, L = len(widths) stride-2 transposed
    convolutions, tanh) read as (y + 1)/2. Called as the head of a `ContrastiveModel`."""

    image_shape: tuple[int, int, int]
    widths: tuple[int, ...] = (64, 32)
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
        generated = Generator(self.image_shape, self.widths, self.dtype, bn_axis_name=self.bn_axis_name)
        return (generated(features, train=train) + 1.0) / 2.0


class ContextEncoderState(TrainState):
    """The encoder-decoder's `TrainState` (params, batch_stats, opt_state, step, rng; `apply_fn` gives
    predicted images in [0, 1]) and the discriminator's `discriminator_params` and
    `discriminator_opt_state`; its `discriminator_apply` (images in [−1, 1] → logits `[batch]`) and
    `discriminator_tx` are static."""

    discriminator_params: Any
    discriminator_opt_state: optax.OptState
    discriminator_apply: Callable = flax.struct.field(pytree_node=False)
    discriminator_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)


def add_discriminator(state: TrainState, discriminator: nn.Module, tx: optax.GradientTransformation,
                      rng: jax.Array, image_shape: tuple[int, ...]) -> ContextEncoderState:
    """`state` (the encoder-decoder's step-0 state) with `discriminator` initialised from `rng` on
    images of `image_shape` and its optimizer `tx`."""
    params = jax.jit(discriminator.init)(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    fields = {field.name: getattr(state, field.name) for field in dataclasses.fields(TrainState)}
    return ContextEncoderState(**fields, discriminator_params=params, discriminator_opt_state=tx.init(params),
                               discriminator_apply=discriminator.apply, discriminator_tx=tx)


def mask_size(image_shape: tuple[int, ...]) -> tuple[int, int]:
    """The region's (height, width) in images `[h, w, c]`: (⌊h/2⌋, ⌊w/2⌋), a quarter of the area for
    even sides; a UserError for images too small to hold one."""
    height, width = image_shape[:2]
    if height < 2 or width < 2:
        raise UserError(f"context encoder inpainting needs images of at least 2×2 pixels to mask a region, not "
                        f"{height}×{width}; choose another dataset (--config.data)")
    return height // 2, width // 2


def center_mask(image_shape: tuple[int, ...]) -> jax.Array:
    """The central region `[h, w, 1]` (float32, 1 inside): rows (h − ⌊h/2⌋)//2 … and columns
    (w − ⌊w/2⌋)//2 … of `mask_size`."""
    size = mask_size(image_shape)
    corner = jnp.array([(side - part) // 2 for side, part in zip(image_shape[:2], size)])
    return rectangle_masks(corner[None], size, image_shape)[0]


def random_corners(key: jax.Array, example_index: jax.Array, size: tuple[int, int],
                   image_shape: tuple[int, ...]) -> jax.Array:
    """Top-left corners `[n, 2]` (int32 row, column) of regions of `size`, uniform over the positions
    where they fit: corner i drawn from `fold_in(key, example_index[i])`, so an example gets the same
    region on any number of devices."""
    limits = jnp.array([side - part + 1 for side, part in zip(image_shape[:2], size)])

    def corner(index):
        return jax.random.randint(jax.random.fold_in(key, index), (2,), 0, limits)

    return jax.vmap(corner)(jnp.asarray(example_index))


def rectangle_masks(corners: jax.Array, size: tuple[int, int], image_shape: tuple[int, ...]) -> jax.Array:
    """Masks `[n, h, w, 1]` (float32): 1 on rows corners[i, 0] … corners[i, 0] + size[0] − 1 and
    columns corners[i, 1] … corners[i, 1] + size[1] − 1 of image i, 0 elsewhere."""
    rows, columns = jnp.arange(image_shape[0]), jnp.arange(image_shape[1])
    top, left = corners[:, 0, None], corners[:, 1, None]
    inside_rows = (rows >= top) & (rows < top + size[0])  # [n, h]
    inside_columns = (columns >= left) & (columns < left + size[1])  # [n, w]
    return (inside_rows[:, :, None] & inside_columns[:, None, :]).astype(jnp.float32)[..., None]


def region_masks(mask: str, key: jax.Array, example_index: jax.Array, image_shape: tuple[int, ...]) -> jax.Array:
    """The masks `[n, h, w, 1]` of examples `example_index` `[n]`: the central region for every image
    (`mask="center"`, `key` unused), or each image's own random region (`"random"`, `random_corners`)."""
    count = jnp.shape(example_index)[0]
    if mask == "center":
        return jnp.broadcast_to(center_mask(image_shape), (count, *image_shape[:2], 1))
    size = mask_size(image_shape)
    return rectangle_masks(random_corners(key, example_index, size, image_shape), size, image_shape)


def fill_values(fill: str, train_images: np.ndarray) -> jax.Array:
    """What fills the region in the encoder's input, per channel `[c]` in [0, 1]: the mean of each
    channel over the training images `[n, h, w, c]` (uint8; summed in float64 on the host, so CIFAR-10's
    50,000 images are never one float array) divided by 255 for "mean", zeros for "zero"."""
    registry.lookup(dict.fromkeys(FILLS), fill, "fill")
    if fill == "zero":
        return jnp.zeros((np.shape(train_images)[-1],), jnp.float32)
    return jnp.asarray(np.mean(train_images, axis=(0, 1, 2), dtype=np.float64) / 255.0, jnp.float32)


def masked_input(images: jax.Array, masks: jax.Array, fill: jax.Array) -> jax.Array:
    """The encoder's input (1 − M) ⊙ x + M ⊙ fill: images `[n, h, w, c]`, masks `[n, h, w, 1]`,
    `fill` `[c]` (or a scalar)."""
    return (1.0 - masks) * images + masks * fill


def complete(images: jax.Array, masks: jax.Array, predictions: jax.Array) -> jax.Array:
    """The completed images x̂ = (1 − M) ⊙ x + M ⊙ F: the true context, the predicted region."""
    return (1.0 - masks) * images + masks * predictions


def reconstruction_loss(images: jax.Array, predictions: jax.Array, masks: jax.Array) -> jax.Array:
    """L_recon = (1/N) Σ_i ‖M_i ⊙ (x_i − F_i)‖² = (1/N) Σ_i Σ_{p,c} M_ip (x_ipc − F_ipc)² (M binary):
    the squared error over the masked pixels and channels, summed per image, averaged over the batch
    of N images `[N, h, w, c]` (masks `[N, h, w, 1]`)."""
    return jnp.sum(jnp.square(masks * (images - predictions))) / images.shape[0]


def context_encoder_loss(images: jax.Array, predictions: jax.Array, masks: jax.Array, fake_logits: jax.Array,
                         adversarial_weight: float) -> jax.Array:
    """L = L_recon + λ·L_adv, L_adv = −E log σ(fake_logits), the non-saturating generator loss of the
    discriminator's logits `[N]` of the completed images."""
    return reconstruction_loss(images, predictions, masks) + adversarial_weight * generator_loss(fake_logits)


def train_step(state: ContextEncoderState, batch: dict, *, settings: ContextEncoderSettings, fill: jax.Array
               ) -> tuple[ContextEncoderState, dict]:
    """One step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`): the regions of
    `settings.mask` (random ones from the key `fold_in(state.rng, state.step)` and the global example
    index, so 8 devices give the numbers of 1), then `train_step_on_images`. Bind `settings` and
    `fill` (`fill_values`, `[c]`) with `functools.partial` and compile with `DataParallel.step`."""
    images = model_input(batch["image"])
    step_key = jax.random.fold_in(state.rng, state.step)
    example_index = jax.lax.axis_index(DATA_AXIS) * images.shape[0] + jnp.arange(images.shape[0])
    masks = region_masks(settings.mask, step_key, example_index, images.shape[1:])
    return train_step_on_images(state, images, masks, adversarial_weight=settings.adversarial_weight, fill=fill)


def train_step_on_images(state: ContextEncoderState, images: jax.Array, masks: jax.Array, *,
                         adversarial_weight: float, fill: jax.Array) -> tuple[ContextEncoderState, dict]:
    """The update of `train_step` given this device's images `[n, h, w, c]` in [0, 1] and masks
    `[n, h, w, 1]`.

    F = `state.apply_fn` of the masked input (training mode, synchronised BatchNorm) is computed once.
    With λ = `adversarial_weight` > 0, first the discriminator's update on −E log D(x) − E log(1 − D(x̂))
    with x̂ held constant (the gradient reaches only the discriminator), then the encoder-decoder's
    update on L = L_recon + λ·L_adv through the updated discriminator (the gradient reaches only the
    encoder-decoder); λ = 0: the encoder-decoder's update on L_recon alone and the discriminator is
    untouched. Gradients, BatchNorm statistics and metrics are averaged over `DATA_AXIS`.

    Metrics of the global batch, each measured before the update it drives: `loss` (L),
    `reconstruction_loss`; with λ > 0 also `adversarial_loss` (L_adv, through the updated
    discriminator), `discriminator_loss`, `d_real` and `d_fake` (mean D(x) and D(x̂)).
    """
    inputs = masked_input(images, masks, fill)

    def decode(params):
        predictions, updates = state.apply_fn({**state.variables, "params": params}, inputs, train=True,
                                              mutable=["batch_stats"])
        return predictions, updates.get("batch_stats", {})

    predictions, pull_back, batch_stats = jax.vjp(decode, state.params, has_aux=True)
    discriminator_params, discriminator_opt_state, metrics = (state.discriminator_params,
                                                              state.discriminator_opt_state, {})
    if adversarial_weight:
        real = 2.0 * images - 1.0
        fake = 2.0 * complete(images, masks, predictions) - 1.0

        def discriminator_objective(params):
            logits_real = state.discriminator_apply({"params": params}, real)
            logits_fake = state.discriminator_apply({"params": params}, fake)
            return discriminator_loss(logits_real, logits_fake), (logits_real, logits_fake)

        (discriminator_loss_value, (logits_real, logits_fake)), grads = jax.value_and_grad(
            discriminator_objective, has_aux=True)(discriminator_params)
        updates, discriminator_opt_state = state.discriminator_tx.update(
            jax.lax.pmean(grads, DATA_AXIS), discriminator_opt_state, discriminator_params)
        discriminator_params = optax.apply_updates(discriminator_params, updates)
        metrics = {"discriminator_loss": discriminator_loss_value, "d_real": jnp.mean(jax.nn.sigmoid(logits_real)),
                   "d_fake": jnp.mean(jax.nn.sigmoid(logits_fake))}

    def objective(predictions):
        reconstruction = reconstruction_loss(images, predictions, masks)
        if not adversarial_weight:
            return reconstruction, {"reconstruction_loss": reconstruction}
        logits = state.discriminator_apply({"params": discriminator_params},
                                           2.0 * complete(images, masks, predictions) - 1.0)
        loss = context_encoder_loss(images, predictions, masks, logits, adversarial_weight)
        return loss, {"reconstruction_loss": reconstruction, "adversarial_loss": generator_loss(logits)}

    (loss, parts), prediction_grads = jax.value_and_grad(objective, has_aux=True)(predictions)
    (grads,) = pull_back(prediction_grads)
    state = state.apply_gradients(jax.lax.pmean(grads, DATA_AXIS), batch_stats=jax.lax.pmean(batch_stats, DATA_AXIS),
                                  discriminator_params=discriminator_params,
                                  discriminator_opt_state=discriminator_opt_state)
    return state, jax.lax.pmean({"loss": loss, **parts, **metrics}, DATA_AXIS)
