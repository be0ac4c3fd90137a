"""The generative adversarial network of lecture 12 in its DCGAN form (Radford, Metz & Chintala 2016):
a generator G(z) and a discriminator D(x) trained by the game min_G max_D E log D(x) + E log(1 − D(G(z))).

* `Generator`: z `[batch, latent]` → a dense projection to a `[h/2ᴸ, w/2ᴸ, widths[0]]` map →
  L = len(widths) strided 4×4 transposed convolutions (×2 each; BatchNorm and ReLU after all but the
  last) → tanh: images `[batch, h, w, c]` in [−1, 1]. BatchNorm is the hand-written
  `visionax.layers.norm.BatchNorm`, synchronised over `bn_axis_name` (the device axis in training).
* `Discriminator`: images in [−1, 1] → len(widths) strided 4×4 convolutions (÷2 each) with
  LeakyReLU(0.2) → one dense logit `[batch]`. No normalisation in any layer (DCGAN leaves it out of
  the first only): with BatchNorm, D(x) of an example would depend on the other examples of its
  batch, and real and generated images come in separate batches, so D could tell them apart by
  batch statistics rather than by image; without it D(x) and D(G(z)) are plain functions of one
  image, which is what the losses, the reported D(x) and D(G(z)) and the gradient figure read.
  Adam with β₁ = 0.5 keeps this small discriminator stable on the sizes used here.
  Both nets initialise their weights from N(0, 0.02²) as DCGAN does.

`GANState` holds both players' params, batch statistics and optimizer states (each a `Players`),
the step and the rng, with both apply functions and optimizers static. `train_step` is one round
of the game per device: k = `discriminator_steps` discriminator updates, then one generator update.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax import lax

from visionax import registry
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.layers.conv import conv_module
from visionax.layers.norm import BatchNorm
from visionax.losses.adversarial import (discriminator_loss, generator_loss, ls_discriminator_loss,
                                         ls_generator_loss)
from visionax.parallel import DATA_AXIS

__all__ = ["Generator", "Discriminator", "Players", "GANState", "GameLoss", "GAME_LOSSES", "GANSettings",
           "create_gan_state", "to_model_range", "to_images", "latent_noise", "generate", "train_step"]

WEIGHT_INIT = nn.initializers.normal(0.02)  # DCGAN: every weight from N(0, 0.02²)
LEAKY_SLOPE = 0.2


def _upsamplings(image_shape: tuple[int, ...], widths: tuple[int, ...], what: str) -> None:
    """A ValueError unless the image's height and width are multiples of 2^len(widths)."""
    scale = 2 ** len(widths)
    if not widths or image_shape[0] % scale or image_shape[1] % scale:
        raise ValueError(f"{what}: {image_shape[0]}×{image_shape[1]} images are not a multiple of 2^{len(widths)} "
                         f"= {scale} a side (one ×2 per width of {widths})")


class Generator(nn.Module):
    """DCGAN's generator: z `[batch, latent]` → images `[batch, *image_shape]` in [−1, 1] (float32).

    Dense(z) to a `[h/2ᴸ, w/2ᴸ, widths[0]]` map, BatchNorm, ReLU; for each later width a 4×4
    stride-2 transposed convolution, BatchNorm, ReLU; a last 4×4 stride-2 transposed convolution to
    the image's channels and tanh (L = len(widths) doublings of the map's size)."""

    image_shape: tuple[int, int, int]
    widths: tuple[int, ...] = (64, 32)
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, z: jax.Array, train: bool = False) -> jax.Array:
        _upsamplings(self.image_shape, self.widths, "Generator")
        height, width, channels = self.image_shape
        scale = 2 ** len(self.widths)
        norm = functools.partial(BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                 dtype=self.dtype, axis_name=self.bn_axis_name)
        transposed = functools.partial(nn.ConvTranspose, kernel_size=(4, 4), strides=(2, 2), padding="SAME",
                                       kernel_init=WEIGHT_INIT, dtype=self.dtype, param_dtype=jnp.float32)
        x = nn.Dense(height // scale * (width // scale) * self.widths[0], use_bias=False, kernel_init=WEIGHT_INIT,
                     dtype=self.dtype, param_dtype=jnp.float32)(z.astype(self.dtype))
        x = nn.relu(norm()(x.reshape(z.shape[0], height // scale, width // scale, self.widths[0])))
        for features in self.widths[1:]:
            x = nn.relu(norm()(transposed(features, use_bias=False)(x)))
        return jnp.tanh(transposed(channels)(x).astype(jnp.float32))


class Discriminator(nn.Module):
    """DCGAN's discriminator: images `[batch, h, w, c]` in [−1, 1] → logits `[batch]` (float32).

    For each width a 4×4 stride-2 convolution (padding 1: ÷2) and LeakyReLU(0.2), no normalisation
    (see the module docstring), then one dense logit from the flattened map."""

    widths: tuple[int, ...] = (32, 64)
    dtype: Any = jnp.float32
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        _upsamplings(images.shape[1:], self.widths, "Discriminator")
        conv = conv_module(self.conv_impl)
        x = images.astype(self.dtype)
        for features in self.widths:
            x = conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)), kernel_init=WEIGHT_INIT,
                     dtype=self.dtype, param_dtype=jnp.float32)(x)
            x = nn.leaky_relu(x, LEAKY_SLOPE)
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(1, kernel_init=WEIGHT_INIT, dtype=self.dtype, param_dtype=jnp.float32)(x)[:, 0].astype(
            jnp.float32)


class Players(flax.struct.PyTreeNode):
    """One value for each player of the game (params, batch statistics or optimizer state)."""

    generator: Any
    discriminator: Any


class GANState(flax.struct.PyTreeNode):
    """Both players' `params`, `batch_stats` and `opt_state` (each a `Players`), the game's `step` (one
    round: k discriminator updates and one generator update) and `rng`; the apply functions and
    optimizers are static: not saved, not traced. `loop.fit` and `checkpoint` read `step`, `params`,
    `savable()` and `restored()` as they do for `TrainState`."""

    step: jax.Array
    params: Players
    batch_stats: Players
    opt_state: Players
    rng: jax.Array
    generator_apply: Callable = flax.struct.field(pytree_node=False)
    discriminator_apply: Callable = flax.struct.field(pytree_node=False)
    generator_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
    discriminator_tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @property
    def generator_variables(self) -> dict:
        """The generator's Flax variables (params and BatchNorm running averages)."""
        return {"params": self.params.generator, "batch_stats": self.batch_stats.generator}

    def savable(self) -> dict:
        """The checkpointed pytree: every pytree field as nested dicts of arrays."""
        return flax.serialization.to_state_dict(self)

    def restored(self, savable: dict) -> "GANState":
        """This state with the fields of a restored `savable()` pytree."""
        return flax.serialization.from_state_dict(self, savable)


def create_gan_state(rng: jax.Array, generator: Generator, discriminator: Discriminator,
                     generator_tx: optax.GradientTransformation, discriminator_tx: optax.GradientTransformation,
                     latent_dim: int) -> GANState:
    """The step-0 state: both players initialised from `rng` (the discriminator on images of the
    generator's `image_shape`), their optimizer states, and the state's own rng."""
    generator_rng, discriminator_rng, state_rng = jax.random.split(rng, 3)
    generator_variables = jax.jit(functools.partial(generator.init, train=False))(
        generator_rng, jnp.zeros((1, latent_dim), jnp.float32))
    discriminator_params = jax.jit(discriminator.init)(
        discriminator_rng, jnp.zeros((1, *generator.image_shape), jnp.float32))["params"]
    params = Players(generator_variables["params"], discriminator_params)
    return GANState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=Players(generator_variables.get("batch_stats", {}), {}),
                    opt_state=Players(generator_tx.init(params.generator), discriminator_tx.init(params.discriminator)),
                    rng=state_rng, generator_apply=generator.apply, discriminator_apply=discriminator.apply,
                    generator_tx=generator_tx, discriminator_tx=discriminator_tx)


def to_model_range(images: jax.Array) -> jax.Array:
    """uint8 images as the discriminator's input in [−1, 1] (the range of tanh): 2·x/255 − 1."""
    return 2.0 * model_input(images) - 1.0


def to_images(outputs: jax.Array) -> jax.Array:
    """Generator outputs in [−1, 1] as uint8 images: round((y + 1)/2 · 255), clipped to 0..255."""
    return jnp.clip(jnp.round((outputs + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


class GameLoss(NamedTuple):
    """The two players' losses, from the discriminator's outputs, and D as a number in the reported
    D(x) and D(G(z)) (σ(logit) for the cross-entropy game, the raw score for least squares)."""

    discriminator: Callable[[jax.Array, jax.Array], jax.Array]
    generator: Callable[[jax.Array], jax.Array]
    probability: Callable[[jax.Array], jax.Array]


GAME_LOSSES = {
    "non_saturating": GameLoss(discriminator_loss, functools.partial(generator_loss, kind="non_saturating"),
                               jax.nn.sigmoid),
    "minimax": GameLoss(discriminator_loss, functools.partial(generator_loss, kind="minimax"), jax.nn.sigmoid),
    "least_squares": GameLoss(ls_discriminator_loss, ls_generator_loss, lambda scores: scores),
}


@dataclasses.dataclass(frozen=True)
class GANSettings:
    """The game: `loss` (a name of `GAME_LOSSES`: the cross-entropy game with the non-saturating or
    the minimax generator loss, or least squares), k = `discriminator_steps` discriminator updates per
    generator update, and the size of z."""

    latent_dim: int
    loss: str = "non_saturating"
    discriminator_steps: int = 1

    def __post_init__(self):
        registry.lookup(GAME_LOSSES, self.loss, "GAN loss")
        for key in ("latent_dim", "discriminator_steps"):
            if getattr(self, key) < 1:
                raise UserError(f"{key}={getattr(self, key)} must be >= 1; set --config.{key} to a positive integer")


def latent_noise(key: jax.Array, example_index: jax.Array, latent_dim: int) -> jax.Array:
    """z `[n, latent_dim]`, row i ~ N(0, I) drawn from `fold_in(key, example_index[i])`: the same z for a
    global example index on any number of devices."""
    return jax.vmap(lambda index: jax.random.normal(jax.random.fold_in(key, index), (latent_dim,)))(example_index)


def generate(generator_apply: Callable, variables: dict, z: jax.Array) -> jax.Array:
    """uint8 images `[n, h, w, c]` of z `[n, latent]`, the generator in evaluation mode (BatchNorm's
    running averages)."""
    return to_images(generator_apply(variables, z, train=False))


def train_step(state: GANState, batch: dict, *, settings: GANSettings) -> tuple[GANState, dict]:
    """One round of the game on this device's `batch` (`{"image": uint8 [local_batch, h, w, c]}`).

    Discriminator update j = 0..k−1 reads its own m = batch/k real images, those whose global index is
    j mod k (Algorithm 1 of Goodfellow et al.: fresh real examples for each of the k updates; the
    same split on any number of devices as long as k divides the local batch), against m generated
    images of fresh z (keys `fold_in(fold_in(round key, j), global fake index)`); the generator runs
    in training mode (synchronised batch statistics) but its running averages are left alone. Then
    one generator update on `batch` fresh z (round key folded with k) against the updated
    discriminator, which updates the generator's running averages. Gradients, batch statistics and
    metrics are averaged over `DATA_AXIS`.

    Metrics of the global batch: `discriminator_loss`, `d_real` (mean D(x)) and `d_fake` (mean
    D(G(z))), each the mean over the k discriminator updates of the value before the update, and
    `generator_loss` before the generator's update.
    """
    game = GAME_LOSSES[settings.loss]
    steps = settings.discriminator_steps
    real = to_model_range(batch["image"])
    local_batch = real.shape[0]
    if local_batch % steps:
        raise ValueError(f"the local batch {local_batch} is not divisible by discriminator_steps={steps}")
    part = local_batch // steps
    device = lax.axis_index(DATA_AXIS)
    rng, round_rng = jax.random.split(state.rng)
    generator_variables = state.generator_variables

    def discriminator_objective(params, real_part, fake):
        output_real = state.discriminator_apply({"params": params}, real_part)
        output_fake = state.discriminator_apply({"params": params}, fake)
        return game.discriminator(output_real, output_fake), (output_real, output_fake)

    params, opt_state, measured = state.params.discriminator, state.opt_state.discriminator, []
    for update in range(steps):
        z = latent_noise(jax.random.fold_in(round_rng, update), device * part + jnp.arange(part), settings.latent_dim)
        fake, _ = state.generator_apply(generator_variables, z, train=True, mutable=["batch_stats"])
        (loss, (output_real, output_fake)), grads = jax.value_and_grad(discriminator_objective, has_aux=True)(
            params, real[update::steps], fake)
        updates, opt_state = state.discriminator_tx.update(lax.pmean(grads, DATA_AXIS), opt_state, params)
        params = optax.apply_updates(params, updates)
        measured.append(jnp.stack([loss, jnp.mean(game.probability(output_real)),
                                   jnp.mean(game.probability(output_fake))]))
    discriminator_loss_value, d_real, d_fake = jnp.mean(jnp.stack(measured), axis=0)

    z = latent_noise(jax.random.fold_in(round_rng, steps), device * local_batch + jnp.arange(local_batch),
                     settings.latent_dim)

    def generator_objective(generator_params):
        fake, updates = state.generator_apply({"params": generator_params, "batch_stats": state.batch_stats.generator},
                                              z, train=True, mutable=["batch_stats"])
        return game.generator(state.discriminator_apply({"params": params}, fake)), updates["batch_stats"]

    (generator_loss_value, batch_stats), grads = jax.value_and_grad(generator_objective, has_aux=True)(
        state.params.generator)
    updates, generator_opt_state = state.generator_tx.update(lax.pmean(grads, DATA_AXIS), state.opt_state.generator,
                                                             state.params.generator)
    state = state.replace(
        step=state.step + 1,
        params=Players(optax.apply_updates(state.params.generator, updates), params),
        batch_stats=Players(lax.pmean(batch_stats, DATA_AXIS), state.batch_stats.discriminator),
        opt_state=Players(generator_opt_state, opt_state),
        rng=rng,
    )
    metrics = lax.pmean({"discriminator_loss": discriminator_loss_value, "generator_loss": generator_loss_value,
                         "d_real": d_real, "d_fake": d_fake}, DATA_AXIS)
    return state, metrics
