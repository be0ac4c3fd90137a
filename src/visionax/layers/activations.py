"""Activation functions of lecture 7, written from their formulas (tests compare with `jax.nn`).

Elementwise functions take and return arrays of any shape; PReLU and learned-β Swish are
`flax.linen` Modules because they have parameters; maxout reduces the feature axis by k.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "sigmoid", "tanh", "relu", "leaky_relu", "abs_rectify", "elu", "selu", "swish", "maxout",
    "PReLU", "Swish", "Maxout", "SELU_LAMBDA", "SELU_ALPHA",
]

# The fixed point constants of the self-normalising network (Klambauer et al., 2017).
SELU_LAMBDA = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717


def sigmoid(x: jax.Array) -> jax.Array:
    """Logistic sigmoid σ(x) = 1 / (1 + e^{−x}), evaluated through e^{−|x|} so it never overflows."""
    x = jnp.asarray(x)
    z = jnp.exp(-jnp.abs(x))
    return jnp.where(x >= 0, 1.0 / (1.0 + z), z / (1.0 + z))


def tanh(x: jax.Array) -> jax.Array:
    """Hyperbolic tangent tanh(x) = (e^x − e^{−x}) / (e^x + e^{−x}) = 2σ(2x) − 1 (zero-centred, saturating)."""
    return jnp.tanh(x)


def relu(x: jax.Array) -> jax.Array:
    """Rectified linear unit max(0, x); its gradient at 0 is taken as 0."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, x, jnp.zeros_like(x))


def leaky_relu(x: jax.Array, alpha: float = 0.01) -> jax.Array:
    """Leaky ReLU max(αx, x) for 0 ≤ α < 1: x for x > 0, αx otherwise (α = 0.01)."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, x, alpha * x)


def abs_rectify(x: jax.Array) -> jax.Array:
    """Absolute-value rectification |x| (a generalised ReLU with slope −1 for x < 0)."""
    x = jnp.asarray(x)
    return jnp.where(x >= 0, x, -x)


def elu(x: jax.Array, alpha: float = 1.0) -> jax.Array:
    """Exponential linear unit: x for x > 0, α(e^x − 1) otherwise (α = 1)."""
    x = jnp.asarray(x)
    return jnp.where(x > 0, x, alpha * jnp.expm1(jnp.minimum(x, 0.0)))


def selu(x: jax.Array) -> jax.Array:
    """Scaled ELU λ·(x for x > 0, α(e^x − 1) otherwise) with λ ≈ 1.0507 and α ≈ 1.6733 (self-normalising)."""
    return SELU_LAMBDA * elu(x, SELU_ALPHA)


def swish(x: jax.Array, beta: float | jax.Array = 1.0) -> jax.Array:
    """Swish x · σ(βx) (β = 1 is SiLU)."""
    x = jnp.asarray(x)
    return x * sigmoid(beta * x)


def maxout(x: jax.Array, k: int, axis: int = -1) -> jax.Array:
    """Maxout over groups of k: output feature i is max_{j<k} x[..., i·k + j]; the axis shrinks by k."""
    x = jnp.asarray(x)
    axis = axis % x.ndim
    size = x.shape[axis]
    if size % k:
        raise ValueError(f"maxout: axis of size {size} is not divisible into groups of k={k}")
    grouped = x.reshape(x.shape[:axis] + (size // k, k) + x.shape[axis + 1:])
    return jnp.max(grouped, axis=axis + 1)


class PReLU(nn.Module):
    """Parametric ReLU max(0, x) + α_c min(0, x) with one learned α per channel c (the last axis), α₀ = 0.25."""

    alpha_init: float = 0.25

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        alpha = self.param("alpha", nn.initializers.constant(self.alpha_init), (x.shape[-1],), jnp.float32)
        return jnp.where(x > 0, x, alpha.astype(x.dtype) * x)


class Swish(nn.Module):
    """Swish x · σ(βx) with β fixed (`learn_beta=False`) or a learned scalar parameter starting at `beta`."""

    beta: float = 1.0
    learn_beta: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        beta = self.param("beta", nn.initializers.constant(self.beta), (), jnp.float32) if self.learn_beta else self.beta
        return swish(x, beta)


class Maxout(nn.Module):
    """Maxout unit: an affine map to `features`·k units, then the max over each group of k: max_j (w_jᵀx + b_j)."""

    features: int
    k: int = 2

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return maxout(nn.Dense(self.features * self.k)(x), self.k)
