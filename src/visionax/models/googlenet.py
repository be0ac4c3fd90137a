"""GoogLeNet (Inception v1) — Szegedy et al., "Going Deeper with Convolutions" (CVPR 2015).

The idea: the Inception module and global average pooling. Each module runs 1×1, 3×3 and 5×5
convolutions and a 3×3 max-pool side by side and concatenates them along channels, with 1×1
"bottleneck" convolutions in front of the expensive branches to cut their input channels; and the
network ends in a global average pool and one linear layer instead of AlexNet's and VGG's huge fully
connected layers: 22 layers deep, with 12× fewer parameters than the paper's AlexNet.

Layout and parameter count (6,624,904) are torchvision's `googlenet` without the auxiliary
classifiers (which are only used in training): convolutions are followed by BatchNorm, and the
"5×5" branch uses a 3×3 kernel, a known quirk of torchvision's port (pytorch/vision#906) kept so the
parameters match its weights. `width_mult` scales every layer for small CPU models.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from visionax.models.common import (ConvBNAct, ModuleDef, classify, conv_def, pool_feature_map,
                                    max_pool, norm_def, scaled)


class Inception(nn.Module):
    """Four parallel branches concatenated: 1×1 | 1×1→3×3 | 1×1→3×3 ("5×5") | 3×3 max-pool→1×1."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        layer = lambda features, kernel, name: ConvBNAct(features, kernel, self.conv, self.norm, name=name)
        branch1 = layer(self.ch1x1, 1, "branch1")(x)
        branch2 = layer(self.ch3x3, 3, "branch2_b")(layer(self.ch3x3red, 1, "branch2_a")(x))
        branch3 = layer(self.ch5x5, 3, "branch3_b")(layer(self.ch5x5red, 1, "branch3_a")(x))
        branch4 = layer(self.pool_proj, 1, "branch4")(max_pool(x, 3, 1, padding=1, ceil_mode=True))
        return jnp.concatenate([branch1, branch2, branch3, branch4], axis=-1)


# (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj) of each module; "pool" is a 3×3/2 max-pool
# (2×2/2 before stage 5), all with ceil_mode as in torchvision.
INCEPTIONS = (
    ("3a", (64, 96, 128, 16, 32, 32)), ("3b", (128, 128, 192, 32, 96, 64)), ("pool", 3),
    ("4a", (192, 96, 208, 16, 48, 64)), ("4b", (160, 112, 224, 24, 64, 64)),
    ("4c", (128, 128, 256, 24, 64, 64)), ("4d", (112, 144, 288, 32, 64, 64)),
    ("4e", (256, 160, 320, 32, 128, 128)), ("pool", 2),
    ("5a", (256, 160, 320, 32, 128, 128)), ("5b", (384, 192, 384, 48, 128, 128)),
)


class GoogLeNet(nn.Module):
    num_classes: int | None = 1000
    width_mult: float = 1.0
    dropout: float = 0.2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype)
        norm = norm_def(train, self.dtype, self.bn_axis_name)
        width = lambda channels: scaled(channels, self.width_mult)
        x = jnp.asarray(x, self.dtype)
        x = ConvBNAct(width(64), 7, conv, norm, stride=2, name="conv1")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        x = ConvBNAct(width(64), 1, conv, norm, name="conv2")(x)
        x = ConvBNAct(width(192), 3, conv, norm, name="conv3")(x)
        x = max_pool(x, 3, 2, ceil_mode=True)
        for name, spec in INCEPTIONS:
            if name == "pool":
                x = max_pool(x, spec, 2, ceil_mode=True)
            else:
                x = Inception(*map(width, spec), conv=conv, norm=norm, name=f"inception{name}")(x)
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train, self.dropout)


CONFIGS = {"googlenet": {}}
