"""Weight initialisation of lecture 7 as Flax initializers `init(key, shape, dtype) -> array`.

The fan-in d_in of a kernel is the product of all its dimensions but the last: d_in for a Dense
kernel (d_in, d_out), kh·kw·c_in for a convolution kernel (kh, kw, c_in, c_out). Its fan-out d_out
is the last dimension times the spatial ones (all but the last two): d_out for a Dense kernel,
kh·kw·c_out for a convolution kernel. These are the fans of `jax.nn.initializers.variance_scaling`
and PyTorch's `kaiming_normal_`, also for a grouped convolution, whose kernel holds c_in/groups inputs
(its fan-out stays kh·kw·c_out although one input feeds only c_out/groups of the filters).
Use them as `nn.Dense(features, kernel_init=kaiming())`.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp

from visionax import registry

__all__ = ["fan_in", "fan_out", "small_random", "xavier", "kaiming", "INITIALIZERS", "get"]


def fan_in(shape: Sequence[int]) -> int:
    """Number of inputs of one output unit: the product of all dimensions of `shape` but the last."""
    if len(shape) < 2:
        raise ValueError(f"a kernel needs at least 2 dimensions to have a fan-in, got shape {tuple(shape)}")
    return math.prod(shape[:-1])


def fan_out(shape: Sequence[int]) -> int:
    """The last dimension of `shape` times all but the last two (kh·kw·c_out; d_out for a Dense kernel)."""
    if len(shape) < 2:
        raise ValueError(f"a kernel needs at least 2 dimensions to have a fan-out, got shape {tuple(shape)}")
    return math.prod(shape[:-2]) * shape[-1]


def small_random(std: float = 0.01):
    """Small Gaussian weights W ~ N(0, std²) with std = 0.01: activations shrink towards 0 in deep nets."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return std * jax.random.normal(key, shape, dtype)

    return init


def xavier(gain: float = 1.0):
    """Xavier initialisation W ~ N(0, 1) · gain / √d_in: keeps the variance of tanh-like activations."""

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jax.random.normal(key, shape, dtype) * jnp.asarray(gain / math.sqrt(fan_in(shape)), dtype)

    return init


_FANS = {"fan_in": fan_in, "fan_out": fan_out}


def kaiming(mode: str = "fan_in"):
    """Kaiming (He) initialisation W ~ N(0, 1) · √(2 / d): keeps the variance of ReLU activations.

    d = d_in (`mode="fan_in"`) keeps the variance of the activations in the forward pass;
    d = d_out (`mode="fan_out"`) that of the gradients in the backward pass (torchvision's
    convolution init, `kaiming_normal_(mode="fan_out", nonlinearity="relu")`)."""
    if mode not in _FANS:
        raise ValueError(f"kaiming: mode must be 'fan_in' or 'fan_out', not {mode!r}")
    fan = _FANS[mode]

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        return jax.random.normal(key, shape, dtype) * jnp.asarray(math.sqrt(2.0 / fan(shape)), dtype)

    return init


INITIALIZERS = {"small_random": small_random, "xavier": xavier, "kaiming": kaiming}


def get(name: str):
    """The initializer called `name` (small_random, xavier or kaiming) with its default arguments."""
    return registry.lookup(INITIALIZERS, name, "initializer")()
