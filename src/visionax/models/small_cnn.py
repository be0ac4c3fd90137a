"""A small convolutional classifier for the embedded 8×8 digits (and other small images)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers.conv import conv_module
from visionax.layers.norm import BatchNorm
from visionax.models.common import classify, pool_feature_map


class SmallCNN(nn.Module):
    """conv3×3(32)–BN–ReLU, conv3×3(64)–BN–ReLU, max-pool 2, conv3×3(128)–BN–ReLU, global mean, linear
    ("head"). BatchNorm is the hand-written `visionax.layers.norm.BatchNorm`."""

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
            x = BatchNorm(
                use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                axis_name=self.bn_axis_name,
            )(x)
            x = nn.relu(x)
            if index == 1:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        # The zoo's classifier: Dense "head" (what init_from leaves fresh), float32 logits or features.
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train)


CONFIGS = {"small_cnn": {}}
