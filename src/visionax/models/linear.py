"""The linear classifier of lecture 2–3: class scores s = W x + b of the flattened image."""

from __future__ import annotations

import flax.linen as nn
import jax

from visionax.layers.init import small_random

__all__ = ["LinearClassifier"]


class LinearClassifier(nn.Module):
    """s = x W + b for images `[batch, ...]` flattened to `[batch, features]`: W `[features,
    num_classes]` drawn as `weight_std`·N(0, 1) (small random weights, as in the course), b = 0.
    Trained with the SVM or the softmax loss; each column of W seen as an image is a class template."""

    num_classes: int
    weight_std: float = 1e-3

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout, no BatchNorm
        x = images.reshape(images.shape[0], -1)
        weights = self.param("W", small_random(self.weight_std), (x.shape[-1], self.num_classes))
        bias = self.param("b", nn.initializers.zeros, (self.num_classes,))
        return x @ weights + bias
