"""Discrete likelihoods of images: uint8 images quantised to `levels` values per sub-pixel, and the
negative log-likelihood in bits per dimension that PixelRNN/PixelCNN papers report.

A sub-pixel is one channel of one pixel; an `[h, w, c]` image has D = h·w·c of them. The uniform
distribution over `levels` values is the bound every model must beat: log₂(levels) bits per
dimension (log₂ 17 ≈ 4.09 for the embedded digits, whose 17 grey levels 0..16 are stored as
round(k·255/16); 8 for 8-bit images at 256 levels).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

__all__ = ["quantize", "dequantize", "bits_per_dim", "nats_to_bits_per_dim", "uniform_bits_per_dim"]


def quantize(images: jax.Array, levels: int) -> jax.Array:
    """uint8 images (0..255) as int32 levels 0..levels−1: round(x·(levels − 1)/255).

    Exact for the embedded digits at 17 levels (stored as round(k·255/16), quantised back to k) and
    the identity at 256 levels.
    """
    scaled = jnp.asarray(images, jnp.float32) * ((levels - 1) / 255.0)
    return jnp.clip(jnp.round(scaled), 0, levels - 1).astype(jnp.int32)


def dequantize(values: jax.Array, levels: int) -> jax.Array:
    """int levels 0..levels−1 as uint8 images: round(q·255/(levels − 1)), the inverse of `quantize`."""
    scaled = jnp.asarray(values, jnp.float32) * (255.0 / (levels - 1))
    return jnp.clip(jnp.round(scaled), 0, 255).astype(jnp.uint8)


def nats_to_bits_per_dim(nats_per_image: jax.Array, dimensions: int) -> jax.Array:
    """A negative log-likelihood in nats per image as bits per sub-pixel: nats / (D · ln 2)."""
    return jnp.asarray(nats_per_image) / (dimensions * math.log(2.0))


def uniform_bits_per_dim(levels: int) -> float:
    """The uniform distribution's negative log-likelihood: log₂(levels) bits per sub-pixel."""
    return math.log2(levels)


def bits_per_dim(logits: jax.Array, images: jax.Array) -> jax.Array:
    """The mean negative log-likelihood in bits per sub-pixel of integer `images` `[N, H, W, C]`
    (levels 0..L−1) under independent categoricals `logits` `[N, H, W, C, L]`:
    −(1/(N·D)) Σ log₂ softmax(logits)[x], computed in float32 from log-softmax (no log of a softmax
    taken in two steps)."""
    log_probabilities = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    chosen = jnp.take_along_axis(log_probabilities, jnp.asarray(images, jnp.int32)[..., None], axis=-1)
    return -jnp.mean(chosen) / math.log(2.0)
