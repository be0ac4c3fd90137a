"""A small convolutional classifier for the embedded 8×8 digits (and other small images)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers.conv import conv_module


class SmallCNN(nn.Module):
    """conv3×3(32)–BN–ReLU, conv3×3(64)–BN–ReLU, max-pool 2, conv3×3(128)–BN–ReLU, global mean, linear."""

    num_classes: int | None = 10
    widths: tuple[int, ...] = (32, 64, 128)
    dtype: Any = jnp.float32
    conv_impl: str = "xla"
    bn_axis_name: str | None = None

    @nn.compact
    def __call__(self, images, train: bool = False):
        conv = conv_module(self.conv_impl)
        x = images.astype(self.dtype)
        for index, width in enumerate(self.widths):
            x = conv(width, (3, 3), use_bias=False, dtype=self.dtype)(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                axis_name=self.bn_axis_name,
            )(x)
            x = nn.relu(x)
            if index == 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = jnp.mean(x, axis=(1, 2))
        if not self.num_classes:
            return x
        return nn.Dense(self.num_classes, dtype=self.dtype)(x).astype(jnp.float32)


CONFIGS = {"small_cnn": {}}
