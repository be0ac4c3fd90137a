"""The variational autoencoder (Kingma & Welling 2014): an explicit density bounded from below.

An encoder gives q(z|x) = N(μ(x), diag σ²(x)) over a latent z, a decoder gives p(x|z), the prior is
p(z) = N(0, I), and training maximises the evidence lower bound
ELBO(x) = E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)) ≤ log p(x), with one reparameterised sample
z = μ + σ ⊙ ε per example. The test likelihood is bounded twice: by the ELBO, and more tightly by the
importance-weighted estimate (Burda et al. 2016) log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q,
which rises toward log p(x) as k grows.

Decoders (`DECODERS`): a Bernoulli per sub-pixel for [0, 1] images (grey levels as soft targets: a
cross-entropy, not a likelihood of the quantised images), and the discretised logistic over `levels`
bins with a learned scale (PixelCNN++, IAF): an exact discrete likelihood of images quantised to
`levels` values (`visionax.generative.likelihood.quantize`), so its bits per dimension compare with
PixelCNN's. Randomness is per example (keys folded with the global example index), so the training
step and the evaluation give the same numbers on 8 devices as on 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, ClassVar, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from visionax import registry
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.evaluate.batches import map_over_batches
from visionax.generative.likelihood import dequantize, nats_to_bits_per_dim, quantize
from visionax.layers.conv import conv_module
from visionax.parallel import DATA_AXIS, DataParallel
from visionax.train.state import TrainState

__all__ = ["reparameterize", "gaussian_kl", "gaussian_log_density", "bernoulli_log_likelihood",
           "discretized_logistic_log_likelihood", "BernoulliDecoder", "DiscretizedLogisticDecoder", "DECODERS",
           "ELBOTerms", "elbo", "ImportanceSamples", "importance_samples", "importance_weighted_nll", "VAE",
           "example_keys", "train_step", "indexed_rows", "evaluation_terms", "evaluate"]

Encode = Callable[[jax.Array], tuple[jax.Array, jax.Array]]  # images [batch, ...] -> (mean, logvar) [batch, latent]
LogLikelihood = Callable[[jax.Array, jax.Array], jax.Array]  # (z [batch, latent], images) -> log p(x|z) [batch]


def reparameterize(rng: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = μ + exp(logvar / 2) ⊙ ε, ε ~ N(0, I) drawn from `rng`, of the shape of `mean`.

    exp(logvar / 2) is the standard deviation σ: if ε has unit variance, σ ⊙ ε has variance σ², the
    variance of q. Multiplying by the variance itself (Σ·ε, as some lecture notes write) would give a
    variance of σ⁴: z would not be distributed as q, and the KL term, computed for q, would be wrong.
    The sample is a differentiable function of (μ, logvar), so gradients flow through it.
    """
    epsilon = jax.random.normal(rng, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(logvar / 2) * epsilon


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(μ, σ²) ‖ N(0, I)) = ½ Σ_j (μ_j² + σ_j² − log σ_j² − 1) in closed form, summed over the last
    (latent) axis: `[..., latent]` -> `[...]` nats."""
    return 0.5 * jnp.sum(mean**2 + jnp.exp(logvar) - logvar - 1.0, axis=-1)


def gaussian_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; μ, diag σ²) = −½ Σ_j (log 2π + log σ_j² + (z_j − μ_j)² / σ_j²) over the last axis."""
    return -0.5 * jnp.sum(math.log(2 * math.pi) + logvar + (z - mean) ** 2 * jnp.exp(-logvar), axis=-1)


def _is_traced(values) -> bool:
    return isinstance(values, jax.core.Tracer)


def _check_bernoulli_targets(targets) -> None:
    """A UserError when concrete `targets` leave [0, 1] (traced values cannot be looked at)."""
    if _is_traced(targets):
        return
    values = np.asarray(targets)
    if values.size and (values.min() < 0 or values.max() > 1):
        raise UserError(f"Bernoulli decoder targets must lie in [0, 1] but range over [{values.min():g}, "
                        f"{values.max():g}]; scale the images first (uint8: visionax.data.preprocess.model_input; "
                        "the raw digits are 0..16, not 0..1: divide by 16)")


def _check_level_targets(targets, levels: int) -> None:
    """A UserError when concrete `targets` are not integers in 0..levels − 1."""
    if _is_traced(targets):
        return
    values = np.asarray(targets)
    fractional = bool(np.any(values != np.round(values)))
    if values.size and (values.min() < 0 or values.max() > levels - 1 or fractional):
        raise UserError(f"discretised-logistic targets must be integer levels 0..{levels - 1} but range over "
                        f"[{values.min():g}, {values.max():g}]{' with fractions' if fractional else ''}; quantise "
                        f"uint8 images with visionax.generative.likelihood.quantize(images, {levels})")


def bernoulli_log_likelihood(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Σ_d [x_d log σ(l_d) + (1 − x_d) log(1 − σ(l_d))] = Σ_d [x_d l_d − softplus(l_d)] per example, for
    targets x in [0, 1] and logits l `[batch, ...]` -> `[batch]` nats (one softplus, finite for any
    logit: no log of a sigmoid taken in two steps)."""
    _check_bernoulli_targets(targets)
    logits = jnp.asarray(logits)
    terms = jnp.asarray(targets, logits.dtype) * logits - jax.nn.softplus(logits)
    return jnp.sum(terms.reshape(terms.shape[0], -1), axis=1)


def discretized_logistic_log_likelihood(mean: jax.Array, log_scale: jax.Array, targets: jax.Array,
                                        levels: int) -> jax.Array:
    """Σ_d log P(x_d) per example under the discretised logistic over `levels` bins: integer targets
    k = 0..L−1 `[batch, ...]` sit at x = 2k/(L−1) − 1 in [−1, 1], each bin ±h = ±1/(L−1) wide, and
    P(k) = F(x + h) − F(x − h) with F the logistic CDF σ((· − μ)/s), s = exp(log_scale); the edge bins
    take the tails: P(0) = F(−1 + h), P(L−1) = 1 − F(1 − h). Returns `[batch]` nats.

    In log space with a = (x + h − μ)/s, b = (x − h − μ)/s (a − b = 2h/s > 0), from the identity
    σ(a) − σ(b) = σ(a) σ(−b) (1 − e^{b−a}):
    log P(k) = [k < L−1] log σ(a) + [k > 0] log σ(−b) + [0 < k < L−1] log(−expm1(b − a)),
    each term finite for every μ, s (log σ(a) = −softplus(−a)); the probabilities of the L bins sum to 1.
    """
    _check_level_targets(targets, levels)
    level = jnp.asarray(targets, jnp.int32)
    half_bin = 1.0 / (levels - 1)
    centred = 2.0 * half_bin * level - 1.0 - mean
    inverse_scale = jnp.exp(-log_scale)
    upper, lower = (centred + half_bin) * inverse_scale, (centred - half_bin) * inverse_scale
    below_top, above_bottom = level < levels - 1, level > 0
    log_probability = (jnp.where(below_top, -jax.nn.softplus(-upper), 0.0)
                       + jnp.where(above_bottom, -jax.nn.softplus(lower), 0.0)
                       + jnp.where(below_top & above_bottom, jnp.log(-jnp.expm1(-2.0 * half_bin * inverse_scale)), 0.0))
    return jnp.sum(log_probability.reshape(log_probability.shape[0], -1), axis=1)


@dataclasses.dataclass(frozen=True)
class BernoulliDecoder:
    """p(x|z) = Π_d Bernoulli(x_d; σ(l_d)) on the [0, 1] images of `model_input` (grey levels are soft
    targets: a cross-entropy, not a likelihood of quantised images). Decoder outputs: logits."""

    parameters_per_subpixel: ClassVar[int] = 1
    exact: ClassVar[bool] = False  # not a likelihood of the quantised images

    def targets(self, images: jax.Array) -> jax.Array:
        """uint8 images as [0, 1] targets."""
        return model_input(images)

    def log_likelihood(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """log p(x|z) `[batch]` from decoder outputs `[batch, h, w, c, 1]`."""
        return bernoulli_log_likelihood(outputs[..., 0], targets)

    def image(self, outputs: jax.Array) -> jax.Array:
        """The mean image σ(l) as uint8 `[batch, h, w, c]`."""
        return jnp.round(255.0 * jax.nn.sigmoid(outputs[..., 0])).astype(jnp.uint8)


@dataclasses.dataclass(frozen=True)
class DiscretizedLogisticDecoder:
    """p(x|z) = Π_d discretised logistic(k_d; μ_d, s_d) over `levels` bins of the images quantised to
    `levels` values: an exact discrete likelihood. Decoder outputs: μ (in [−1, 1] units) and log s."""

    levels: int
    parameters_per_subpixel: ClassVar[int] = 2
    exact: ClassVar[bool] = True  # a discrete likelihood: its bits/dim compare with PixelCNN's

    def targets(self, images: jax.Array) -> jax.Array:
        """uint8 images as int32 levels 0..levels−1."""
        return quantize(images, self.levels)

    def log_likelihood(self, outputs: jax.Array, targets: jax.Array) -> jax.Array:
        """log p(x|z) `[batch]` from decoder outputs `[batch, h, w, c, 2]` (μ, log s)."""
        return discretized_logistic_log_likelihood(outputs[..., 0], outputs[..., 1], targets, self.levels)

    def image(self, outputs: jax.Array) -> jax.Array:
        """The median image (the bin holding μ) as uint8 `[batch, h, w, c]`."""
        level = jnp.clip(jnp.round((outputs[..., 0] + 1.0) / 2.0 * (self.levels - 1)), 0, self.levels - 1)
        return dequantize(level, self.levels)


DECODERS = {"bernoulli": lambda levels: BernoulliDecoder(),
            "discretized_logistic": DiscretizedLogisticDecoder}


class ELBOTerms(NamedTuple):
    """One-sample ELBO terms per example: log p(x|z) at z ~ q(z|x) and the closed-form KL, `[batch]`."""

    log_likelihood: jax.Array
    kl: jax.Array

    @property
    def elbo(self) -> jax.Array:
        """E_q[log p(x|z)] − KL(q(z|x) ‖ p(z)), the expectation estimated with one sample."""
        return self.log_likelihood - self.kl


def elbo(encode: Encode, log_likelihood: LogLikelihood, images: jax.Array, keys: jax.Array) -> ELBOTerms:
    """The ELBO's terms for `images` `[batch, ...]`, z = reparameterize(keys[n], μ_n, logvar_n) with one
    key per example `keys` `[batch]`."""
    mean, logvar = encode(images)
    z = jax.vmap(reparameterize)(keys, mean, logvar)
    return ELBOTerms(log_likelihood(z, images), gaussian_kl(mean, logvar))


class ImportanceSamples(NamedTuple):
    """k draws z_i ~ q(z|x) per example: log p(x|z_i), log p(z_i), log q(z_i|x) `[k, batch]`, and the
    closed-form KL(q ‖ p) `[batch]`."""

    log_likelihood: jax.Array
    log_prior: jax.Array
    log_posterior: jax.Array
    kl: jax.Array

    @property
    def log_weights(self) -> jax.Array:
        """log w_i = log p(x|z_i) + log p(z_i) − log q(z_i|x) `[k, batch]`."""
        return self.log_likelihood + self.log_prior - self.log_posterior

    @property
    def importance_weighted_nll(self) -> jax.Array:
        """−log (1/k) Σ_i w_i `[batch]`, by logsumexp."""
        k = self.log_weights.shape[0]
        return -(jax.scipy.special.logsumexp(self.log_weights, axis=0) - math.log(k))

    @property
    def negative_elbo(self) -> jax.Array:
        """−((1/k) Σ_i log p(x|z_i) − KL) `[batch]`: the ELBO's expectation over the same k draws."""
        return -(jnp.mean(self.log_likelihood, axis=0) - self.kl)


def importance_samples(encode: Encode, log_likelihood: LogLikelihood, images: jax.Array, keys: jax.Array,
                       k: int) -> ImportanceSamples:
    """k draws z_i = reparameterize(fold_in(keys[n], i), μ_n, logvar_n), i = 0..k−1, of each example of
    `images` `[batch, ...]` (one key per example, `keys` `[batch]`), decoded one draw at a time."""
    mean, logvar = encode(images)

    def draw(index):
        z = jax.vmap(lambda key, m, v: reparameterize(jax.random.fold_in(key, index), m, v))(keys, mean, logvar)
        zeros = jnp.zeros_like(z)
        return log_likelihood(z, images), gaussian_log_density(z, zeros, zeros), gaussian_log_density(z, mean, logvar)

    log_likelihoods, log_priors, log_posteriors = lax.map(draw, jnp.arange(k))
    return ImportanceSamples(log_likelihoods, log_priors, log_posteriors, gaussian_kl(mean, logvar))


def importance_weighted_nll(encode: Encode, log_likelihood: LogLikelihood, images: jax.Array, keys: jax.Array,
                            k: int = 100) -> jax.Array:
    """−log (1/k) Σ_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x), by logsumexp: `[batch]` nats per image.

    An upper bound on −log p(x) in expectation that falls toward it as k grows; k = 1 is the
    negative ELBO with the KL estimated by the same sample."""
    return importance_samples(encode, log_likelihood, images, keys, k).importance_weighted_nll


def downsamplings(image_shape: tuple[int, int, int]) -> int:
    """How many times the encoder halves the image: while both sides are even and above 4
    (8×8 → 4×4: once; 32×32 → 4×4: three times)."""
    height, width = image_shape[:2]
    count = 0
    while height % 2 == 0 and width % 2 == 0 and min(height, width) > 4:
        height, width, count = height // 2, width // 2, count + 1
    return count


class Encoder(nn.Module):
    """conv3×3(w), then per halving a stride-2 conv3×3 and a conv3×3 at twice the width, ELU after
    each, and a linear map of the flattened map to (μ, logvar) `[batch, latent]` (float32)."""

    latent_size: int
    width: int
    halvings: int
    dtype: Any
    conv_impl: str

    @nn.compact
    def __call__(self, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        conv = conv_module(self.conv_impl)
        x = nn.elu(conv(self.width, (3, 3), dtype=self.dtype)(inputs.astype(self.dtype)))
        for level in range(1, self.halvings + 1):
            x = nn.elu(conv(self.width * 2**level, (3, 3), strides=(2, 2), dtype=self.dtype)(x))
            x = nn.elu(conv(self.width * 2**level, (3, 3), dtype=self.dtype)(x))
        moments = nn.Dense(2 * self.latent_size, dtype=self.dtype)(x.reshape(x.shape[0], -1)).astype(jnp.float32)
        return moments[:, :self.latent_size], moments[:, self.latent_size:]


class Decoder(nn.Module):
    """The encoder mirrored: a linear map of z to the smallest map, per doubling a conv3×3, a
    nearest-neighbour ×2 upsampling and a conv3×3 at half the width, ELU after each, and a conv3×3 to
    the decoder's parameters `[batch, h, w, c, parameters]` (float32)."""

    image_shape: tuple[int, int, int]
    width: int
    halvings: int
    parameters_per_subpixel: int
    dtype: Any
    conv_impl: str

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        conv = conv_module(self.conv_impl)
        height, width, channels = self.image_shape
        scale = 2**self.halvings
        features = self.width * scale
        x = nn.elu(nn.Dense(height // scale * (width // scale) * features, dtype=self.dtype)(z.astype(self.dtype)))
        x = x.reshape(z.shape[0], height // scale, width // scale, features)
        for level in range(self.halvings, 0, -1):
            x = nn.elu(conv(self.width * 2**level, (3, 3), dtype=self.dtype)(x))
            x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
            x = nn.elu(conv(self.width * 2 ** (level - 1), (3, 3), dtype=self.dtype)(x))
        x = conv(channels * self.parameters_per_subpixel, (3, 3), dtype=self.dtype)(x).astype(jnp.float32)
        return x.reshape(*x.shape[:3], channels, self.parameters_per_subpixel)


class VAE(nn.Module):
    """A convolutional VAE for uint8 images of `image_shape` `(h, w, c)`: the encoder halves the image
    down to about 4×4 (`downsamplings`), doubling the width `width` each time, into q(z|x) with
    `latent_size` dimensions; the decoder mirrors it into the parameters of `decoder`'s p(x|z)
    ("bernoulli" or "discretized_logistic" over `levels` bins). Computes in `dtype` with float32
    parameters; every convolution through `conv_impl`.

    Methods (`model.apply(variables, ..., method=...)`): `encode(images) -> (μ, logvar)`,
    `decode(z) -> parameters`, `log_likelihood(z, images) -> log p(x|z)`, `images(z) -> uint8`.
    """

    image_shape: tuple[int, int, int]
    latent_size: int = 16
    width: int = 32
    decoder_name: str = "discretized_logistic"
    levels: int = 256
    dtype: Any = jnp.float32
    conv_impl: str = "xla"

    @property
    def likelihood(self) -> BernoulliDecoder | DiscretizedLogisticDecoder:
        return registry.lookup(DECODERS, self.decoder_name, "decoder")(self.levels)

    def setup(self):
        halvings = downsamplings(self.image_shape)
        self.encoder = Encoder(self.latent_size, self.width, halvings, self.dtype, self.conv_impl)
        self.decoder = Decoder(self.image_shape, self.width, halvings, self.likelihood.parameters_per_subpixel,
                               self.dtype, self.conv_impl)

    def encode(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(μ, logvar) `[batch, latent]` of q(z|x) for uint8 (or [0, 1]) images `[batch, h, w, c]`."""
        return self.encoder(model_input(images))

    def decode(self, z: jax.Array) -> jax.Array:
        """The parameters of p(x|z) `[batch, h, w, c, parameters]` for z `[batch, latent]`."""
        return self.decoder(z)

    def log_likelihood(self, z: jax.Array, images: jax.Array) -> jax.Array:
        """log p(x|z) `[batch]` nats of uint8 images `[batch, h, w, c]`."""
        return self.likelihood.log_likelihood(self.decode(z), self.likelihood.targets(images))

    def images(self, z: jax.Array) -> jax.Array:
        """The decoder's image for z (Bernoulli: the mean; discretised logistic: the median) as uint8."""
        return self.likelihood.image(self.decode(z))

    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """(μ, logvar, decode(μ)): every parameter used once, for `init`."""
        mean, logvar = self.encode(images)
        return mean, logvar, self.decode(mean)


def _bound(model: VAE, variables: dict) -> tuple[Encode, LogLikelihood]:
    """The encoder and log p(x|z) of `model` with `variables`, as the estimators take them."""
    return (lambda images: model.apply(variables, images, method=VAE.encode),
            lambda z, images: model.apply(variables, z, images, method=VAE.log_likelihood))


def example_keys(rng: jax.Array, indices: jax.Array) -> jax.Array:
    """One key per example, fold_in(rng, global example index) `[batch]`: the same on any device count."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, indices)


def train_step(state: TrainState, batch: dict, *, model: VAE) -> tuple[TrainState, dict]:
    """One update on this device's `batch` (`{"image": uint8 [local_batch, h, w, c], ...}`) minimising the
    mean negative ELBO; returns the new state and `{"loss", "reconstruction", "kl"}` of the global batch
    in nats per image (loss = reconstruction + kl, reconstruction = −log p(x|z)). Each example's
    ε comes from its key folded with its global index; gradients and metrics are pmean'd over DATA_AXIS."""
    rng, step_rng = jax.random.split(state.rng)
    images = batch["image"]
    local_batch = images.shape[0]
    keys = example_keys(step_rng, lax.axis_index(DATA_AXIS) * local_batch + jnp.arange(local_batch))

    def loss_function(params):
        terms = elbo(*_bound(model, {"params": params}), images, keys)
        reconstruction, kl = -jnp.mean(terms.log_likelihood), jnp.mean(terms.kl)
        return reconstruction + kl, (reconstruction, kl)

    (loss, (reconstruction, kl)), grads = jax.value_and_grad(loss_function, has_aux=True)(state.params)
    grads = lax.pmean(grads, DATA_AXIS)
    metrics = lax.pmean({"loss": loss, "reconstruction": reconstruction, "kl": kl}, DATA_AXIS)
    return state.apply_gradients(grads, rng=rng), metrics


def indexed_rows(images: np.ndarray) -> np.ndarray:
    """uint8 images `[n, h, w, c]` as int32 rows `[n, 1 + h·w·c]`: each example's index, then its pixels
    (so an evaluation split over devices in padded batches knows every example's global index)."""
    images = np.asarray(images)
    return np.concatenate([np.arange(len(images), dtype=np.int32)[:, None],
                           images.reshape(len(images), -1).astype(np.int32)], axis=1)


def evaluation_terms(replicated: tuple[dict, jax.Array], rows: jax.Array, *, model: VAE, k: int) -> jax.Array:
    """Per device: `[batch, 2]` (negative ELBO, importance-weighted NLL) in nats per image of the rows of
    `indexed_rows` with `replicated` = (variables, rng), both from the same k draws per example
    (keys fold_in(rng, example index))."""
    variables, rng = replicated
    images = rows[:, 1:].reshape(rows.shape[0], *model.image_shape).astype(jnp.uint8)
    samples = importance_samples(*_bound(model, variables), images, example_keys(rng, rows[:, 0]), k)
    return jnp.stack([samples.negative_elbo, samples.importance_weighted_nll], axis=1)


def evaluate(data_parallel: DataParallel, model: VAE, variables: dict, images: np.ndarray, rng: jax.Array, *,
             k: int = 100, batch_size: int) -> dict[str, float]:
    """The test negative ELBO and importance-weighted NLL (k draws) of uint8 `images` `[n, h, w, c]` over
    the mesh: `{"negative_elbo_nats", "iwae_nats"}` per image and the same as `..._bits_per_dim`."""
    per_device = functools.partial(evaluation_terms, model=model, k=k)
    terms = map_over_batches(data_parallel, per_device, (variables, rng), indexed_rows(images), batch_size)
    negative_elbo, iwae = (float(np.mean(terms[:, column], dtype=np.float64)) for column in (0, 1))
    dimensions = int(np.prod(model.image_shape))
    return {"negative_elbo_nats": negative_elbo, "iwae_nats": iwae,
            "negative_elbo_bits_per_dim": float(nats_to_bits_per_dim(negative_elbo, dimensions)),
            "iwae_bits_per_dim": float(nats_to_bits_per_dim(iwae, dimensions))}
