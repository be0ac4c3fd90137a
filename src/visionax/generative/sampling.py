"""Sampling an autoregressive image model pixel by pixel, sub-pixel by sub-pixel: x_p ~ softmax(logits_p)
for p = 0 .. H·W·C − 1 in raster-then-channel order, p = (i·W + j)·C + c for row i, column j, colour c.

Each of the H·W·C iterations of a `lax.fori_loop` runs the network on the whole current image (the
sub-pixels not drawn yet are 0; causality makes their values irrelevant to logits_p) and draws
sub-pixel p of every image of the batch with the key `jax.random.fold_in(rng, p)`:

    x[:, i, j, c] = jax.random.categorical(fold_in(rng, p), logits[:, i, j, c, :])

so a draw can be recomputed from the logits of the finished samples. The lecture's count: H·W·C
network evaluations per batch, 1,024 per channel plane of a 32×32 image. The whole loop is one jitted
program, compiled once per (model, shape, levels).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from visionax.generative.pixelcnn import level_input

__all__ = ["sample", "position_key"]


def position_key(rng: jax.Array, position: jax.Array | int) -> jax.Array:
    """The key that draws sub-pixel `position` = (i·W + j)·C + c: fold_in(rng, position)."""
    return jax.random.fold_in(rng, position)


@functools.partial(jax.jit, static_argnames=("model", "shape", "levels"))
def sample(model: nn.Module, variables: dict, rng: jax.Array, shape: tuple[int, int, int, int],
           levels: int) -> jax.Array:
    """int32 samples `[N, H, W, C]` = `shape` (levels 0..levels−1) of `model`, whose
    `apply(variables, level_input(x, levels))` gives logits `[N, H, W, C, levels]`."""
    _, height, width, channels = shape

    def draw(position, images):
        row, rest = jnp.divmod(position, width * channels)
        column, color = jnp.divmod(rest, channels)
        logits = model.apply(variables, level_input(images, levels))
        chosen = lax.dynamic_index_in_dim(logits, row, axis=1, keepdims=False)
        chosen = lax.dynamic_index_in_dim(chosen, column, axis=1, keepdims=False)
        chosen = lax.dynamic_index_in_dim(chosen, color, axis=1, keepdims=False)  # [N, levels]
        values = jax.random.categorical(position_key(rng, position), chosen, axis=-1)
        return images.at[:, row, column, color].set(values.astype(jnp.int32))

    return lax.fori_loop(0, height * width * channels, draw, jnp.zeros(shape, jnp.int32))
