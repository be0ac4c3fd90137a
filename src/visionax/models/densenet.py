"""DenseNet — Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks"
(CVPR 2017).

The idea: dense connections. Inside a dense block every layer receives the concatenation of the
feature maps of all layers before it and adds only `growth_rate` new channels (BN–ReLU–1×1 conv to
`bn_size·growth_rate` channels, BN–ReLU–3×3 conv to `growth_rate`): features are reused rather than
relearned, gradients reach every layer directly, and the network is narrow and parameter-efficient.
Transition layers between blocks (BN–ReLU–1×1 conv halving the channels, 2×2 average pool) shrink
the maps. Layout and parameter count (7,978,856 for DenseNet-121) are torchvision's `densenet121`.

Options: `growth_rate` (32), `num_init_features` (64, the stem's channels), `bn_size` (4) and
`drop_rate` (dropout after each new layer's 3×3 conv; needs `rngs={"dropout": key}` when training);
smaller values give small CPU models.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers.regularize import Dropout
from visionax.models.common import (ModuleDef, avg_pool, classify, conv_def, pool_feature_map,
                                    max_pool, norm_def, pad)


class DenseLayer(nn.Module):
    """BN–ReLU–1×1 conv (bn_size·growth) – BN–ReLU–3×3 conv (growth), concatenated to the input."""

    growth_rate: int
    bn_size: int
    drop_rate: float
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x, train: bool):
        y = self.conv(self.bn_size * self.growth_rate, (1, 1), name="conv1")(
            nn.relu(self.norm(name="norm1")(x)))
        y = self.conv(self.growth_rate, (3, 3), padding=pad(3), name="conv2")(
            nn.relu(self.norm(name="norm2")(y)))
        if self.drop_rate:
            y = Dropout(self.drop_rate)(y, train=train)
        return jnp.concatenate([x, y], axis=-1)


class DenseNet(nn.Module):
    block_config: Sequence[int] = (6, 12, 24, 16)
    num_classes: int | None = 1000
    growth_rate: int = 32
    num_init_features: int = 64
    bn_size: int = 4
    drop_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype)
        norm = norm_def(train, self.dtype, self.bn_axis_name)
        x = jnp.asarray(x, self.dtype)
        x = conv(self.num_init_features, (7, 7), (2, 2), padding=pad(7), name="conv0")(x)
        x = max_pool(nn.relu(norm(name="norm0")(x)), 3, 2, padding=1)
        for block, layers in enumerate(self.block_config):
            for layer in range(layers):
                x = DenseLayer(self.growth_rate, self.bn_size, self.drop_rate, conv, norm,
                               name=f"block{block + 1}_layer{layer + 1}")(x, train)
            if block < len(self.block_config) - 1:  # transition: halve channels and resolution
                x = nn.relu(norm(name=f"transition{block + 1}_norm")(x))
                x = conv(x.shape[-1] // 2, (1, 1), name=f"transition{block + 1}_conv")(x)
                x = avg_pool(x, 2, 2)
        x = nn.relu(norm(name="norm5")(x))
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train)


CONFIGS = {"densenet121": dict(block_config=(6, 12, 24, 16))}
