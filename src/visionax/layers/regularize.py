"""Regularisation of lecture 7: noise added in training and removed (or averaged out) at test time.

Each function takes an explicit PRNG key and a `train` flag; with `train=False` it is
deterministic (the identity for dropout, DropConnect, stochastic depth, cutout and mixup; fixed
regions for fractional max pooling). The Modules draw their key from the `"dropout"` RNG stream,
as `flax.linen.Dropout` does: `model.apply(variables, x, train=True, rngs={"dropout": key})`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "dropout", "drop_connect", "drop_path", "fractional_max_pool", "fractional_pool_boundaries",
    "cutout", "mixup", "Dropout", "DropConnectDense", "StochasticDepth", "FractionalMaxPool",
]


def _keep_mask(key: jax.Array, rate: float, shape) -> jax.Array:
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop rate must be in [0, 1), got {rate}")
    return jax.random.bernoulli(key, 1.0 - rate, shape)


def dropout(x: jax.Array, rate: float, key: jax.Array | None = None, train: bool = True) -> jax.Array:
    """Inverted dropout: each unit is kept with probability p = 1 − rate and scaled by 1/p, so E[y] = x; identity at evaluation."""
    if not train or rate == 0.0:
        return x
    keep = _keep_mask(key, rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def drop_connect(kernel: jax.Array, rate: float, key: jax.Array | None = None, train: bool = True) -> jax.Array:
    """DropConnect: each weight (not activation) is zeroed with probability `rate`, the rest scaled by 1/(1 − rate) so E[W̃] = W."""
    return dropout(kernel, rate, key, train)


def drop_path(branch: jax.Array, rate: float, key: jax.Array | None = None, train: bool = True) -> jax.Array:
    """Stochastic depth: the residual branch f(x) of each example is dropped with probability `rate` (kept ones scaled by 1/(1 − rate)).

    Use as x + drop_path(f(x), rate, key, train): in training a dropped example passes through the
    identity only; at test every branch is kept, unscaled, and E over the mask equals the test output.
    """
    if not train or rate == 0.0:
        return branch
    keep = _keep_mask(key, rate, (branch.shape[0],) + (1,) * (branch.ndim - 1))
    return jnp.where(keep, branch / (1.0 - rate), jnp.zeros_like(branch))


def fractional_pool_boundaries(size_in: int, size_out: int, u: jax.Array | float) -> jax.Array:
    """Boundaries a_0 = 0 < a_1 < … < a_out = size_in of disjoint pooling regions [a_i, a_{i+1}) (Graham, 2014).

    a_i = ⌈α(i + u)⌉ − ⌈αu⌉ with α = size_in / size_out ∈ [1, 2] and u ∈ [0, 1): every region is
    ⌊α⌋ or ⌈α⌉ wide; a random u gives random regions, a fixed u fixed ones.
    """
    if not size_out <= size_in <= 2 * size_out:
        raise ValueError(f"fractional pooling needs size_out ≤ size_in ≤ 2·size_out, got {size_in} -> {size_out}")
    alpha = size_in / size_out
    i = jnp.arange(size_out + 1, dtype=jnp.float32)
    bounds = jnp.ceil(alpha * (i + u)) - jnp.ceil(alpha * u)
    bounds = jnp.clip(bounds, 0, size_in).astype(jnp.int32)
    return bounds.at[0].set(0).at[-1].set(size_in)


def _pool_axis(x: jax.Array, bounds: jax.Array, axis: int) -> jax.Array:
    """Max of x over [bounds[i], bounds[i+1]) along `axis` for every i (x is one example, channels last)."""
    positions = jnp.arange(x.shape[axis])
    member = (positions[None, :] >= bounds[:-1, None]) & (positions[None, :] < bounds[1:, None])  # (out, in)
    moved = jnp.moveaxis(x, axis, 0)  # (in, ...)
    expand = (slice(None), slice(None)) + (None,) * (moved.ndim - 1)
    pooled = jnp.max(jnp.where(member[expand], moved[None], -jnp.inf), axis=1)  # (out, ...)
    return jnp.moveaxis(pooled, 0, axis)


def fractional_max_pool(
    x: jax.Array, output_size: tuple[int, int], key: jax.Array | None = None, train: bool = True
) -> jax.Array:
    """Fractional max pooling of (B, H, W, C) to (B, h, w, C), h < H < 2h: the max over random rectangular regions.

    In training each example draws its own row and column offsets u ~ U[0, 1) and so its own
    pooling regions; at evaluation u = 0.5 for every example, so the output is deterministic.
    """
    batch, height, width, _ = x.shape
    out_h, out_w = output_size
    if train:
        u = jax.random.uniform(key, (batch, 2))
    else:
        u = jnp.full((batch, 2), 0.5)

    def one(image, offsets):
        rows = fractional_pool_boundaries(height, out_h, offsets[0])
        cols = fractional_pool_boundaries(width, out_w, offsets[1])
        return _pool_axis(_pool_axis(image, rows, 0), cols, 1)

    return jax.vmap(one)(x, u)


def cutout(x: jax.Array, size: int, key: jax.Array | None = None, train: bool = True) -> jax.Array:
    """Cutout: zero a size × size square of each (B, H, W, C) image centred at a uniformly random pixel (clipped at the border).

    Each example gets its own centre; identity at evaluation.
    """
    if not train:
        return x
    batch, height, width, _ = x.shape
    key_y, key_x = jax.random.split(key)
    cy = jax.random.randint(key_y, (batch, 1, 1), 0, height)
    cx = jax.random.randint(key_x, (batch, 1, 1), 0, width)
    rows = jnp.arange(height)[None, :, None]
    cols = jnp.arange(width)[None, None, :]
    low = size // 2
    inside = (rows >= cy - low) & (rows < cy - low + size) & (cols >= cx - low) & (cols < cx - low + size)
    return jnp.where(inside[..., None], jnp.zeros_like(x), x)


def mixup(
    x: jax.Array, labels: jax.Array, key: jax.Array | None = None, alpha: float = 0.2,
    num_classes: int | None = None, train: bool = True,
) -> tuple[jax.Array, jax.Array]:
    """Mixup: x̃ = λ x_i + (1 − λ) x_π(i) and ỹ = λ y_i + (1 − λ) y_π(i), λ ~ Beta(α, α), π a random permutation of the batch.

    `labels` are integer classes (give `num_classes`) or (B, C) probabilities; returns the mixed
    inputs and (B, C) mixed target probabilities for `softmax_cross_entropy`. One λ per batch, so
    the batch mean of inputs and labels is unchanged. At evaluation the inputs are returned
    unchanged with one-hot labels.
    """
    if labels.ndim == 1:
        if num_classes is None:
            raise ValueError("mixup: integer labels need num_classes")
        labels = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
    if not train:
        return x, labels
    key_lam, key_perm = jax.random.split(key)
    lam = jax.random.beta(key_lam, alpha, alpha).astype(x.dtype)
    perm = jax.random.permutation(key_perm, x.shape[0])
    return lam * x + (1.0 - lam) * x[perm], lam * labels + (1.0 - lam) * labels[perm]


class Dropout(nn.Module):
    """Inverted dropout as a Module (key from the "dropout" stream): kept units scaled by 1/(1 − rate); identity when not training."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        if not train or self.rate == 0.0:
            return x
        return dropout(x, self.rate, self.make_rng("dropout"), train=True)


class DropConnectDense(nn.Module):
    """Dense layer y = x W̃ + b whose weights W̃ are DropConnect-masked in training (one mask per call); y = x W + b at test."""

    features: int
    rate: float = 0.5
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        if train and self.rate > 0.0:
            kernel = drop_connect(kernel, self.rate, self.make_rng("dropout"))
        return x @ kernel + bias


class StochasticDepth(nn.Module):
    """Residual block x + f(x) whose branch f is dropped per example with probability `rate` in training (stochastic depth)."""

    branch: nn.Module
    rate: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        out = self.branch(x)
        if not train or self.rate == 0.0:
            return x + out
        return x + drop_path(out, self.rate, self.make_rng("dropout"))


class FractionalMaxPool(nn.Module):
    """Fractional max pooling to `output_size` with random regions in training (key from "dropout"), fixed at test."""

    output_size: tuple[int, int]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        key = self.make_rng("dropout") if train else None
        return fractional_max_pool(x, self.output_size, key, train)
