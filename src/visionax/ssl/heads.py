"""An encoder with a projection head, the model shape shared by SimCLR and MoCo."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.data.preprocess import model_input
from visionax.layers.norm import BatchNorm

__all__ = ["ProjectionHead", "ContrastiveModel", "embed"]


class ProjectionHead(nn.Module):
    """MLP g(h) = W_L·σ(BN(W_{L−1}·…σ(BN(W_1·h)))) mapping features `[batch, features]` to
    `[batch, output_dim]` (at least float32): `num_layers` = 1 is a linear head (MoCo v1), 2 or 3 SimCLR's.

    `batch_norm` puts BatchNorm (`visionax.layers.norm.BatchNorm`, momentum 0.9, synchronised over
    `bn_axis_name` when training) after every hidden Dense layer, whose bias it then replaces.
    """

    hidden_dim: int = 512
    output_dim: int = 128
    num_layers: int = 2
    batch_norm: bool = True
    bn_axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> jax.Array:
        x = features
        for _ in range(self.num_layers - 1):
            x = nn.Dense(self.hidden_dim, use_bias=not self.batch_norm, dtype=self.dtype)(x)
            if self.batch_norm:
                x = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                              axis_name=self.bn_axis_name, dtype=self.dtype)(x)
            x = nn.relu(x)
        x = nn.Dense(self.output_dim, dtype=self.dtype)(x)
        return x.astype(jnp.promote_types(x.dtype, jnp.float32))


class ContrastiveModel(nn.Module):
    """`encoder` (images `[batch, h, w, c]` → features, called as `encoder(x, train=...)`) followed
    by `head`; `__call__` gives projections, `embed` the encoder's features (evaluation mode)."""

    encoder: nn.Module
    head: nn.Module

    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        return self.head(self.encoder(images, train=train), train=train)

    def embed(self, images: jax.Array) -> jax.Array:
        return self.encoder(images, train=False)


def embed(model: ContrastiveModel, variables: dict, images: jax.Array) -> jax.Array:
    """Encoder features `[batch, features]` (evaluation mode, no head) of uint8 images `[batch, h,
    w, c]` through `model_input`: what the kNN monitor, the linear probe and saved embeddings use."""
    return model.apply(variables, model_input(images), method=ContrastiveModel.embed)
