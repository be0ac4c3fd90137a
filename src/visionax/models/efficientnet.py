"""EfficientNet — Tan, Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks"
(ICML 2019).

The idea: compound scaling. Instead of making a network only deeper (ResNet), only wider (Wide
ResNet) or only feeding it larger images, scale all three together: depth by α^φ, width by β^φ and
resolution by γ^φ (α = 1.2, β = 1.1, γ = 1.15, with α·β²·γ² ≈ 2 so each step of φ about doubles the
FLOPs). The baseline B0 is a searched network of MBConv blocks (MobileNetV2's inverted residual with
squeeze-and-excitation and SiLU); B1–B7 are B0 under one rule, `scale_stages`: every stage's channels
times the width coefficient (rounded to a multiple of 8) and its repeats times the depth coefficient
(rounded up), at the coefficient's resolution. The coefficients are the released models' table
(rounded versions of the φ powers), so that every variant matches torchvision's `efficientnet_b0` …
`efficientnet_b7` parameter for parameter (5,288,548 … 66,347,960).

`stochastic_depth` (0.2) is the largest drop rate of the residual branches (rising linearly with
depth; `visionax.layers.regularize.drop_path`); with `train=True`, stochastic depth and dropout need
`rngs={"dropout": key}`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers.regularize import drop_path
from visionax.models.common import (ConvBNAct, ModuleDef, SqueezeExcite, classify, conv_def,
                                    pool_feature_map, make_divisible, norm_def)

# B0 (paper Table 1): expansion, kernel, first stride, input channels, output channels, repeats.
B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# name: (width coefficient, depth coefficient, resolution, dropout) — the released B0..B7.
COEFFICIENTS = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}


def scale_stages(width_mult: float, depth_mult: float, stages=B0_STAGES) -> list[tuple]:
    """The compound-scaling rule: channels × width (multiple of 8), repeats × depth (rounded up)."""
    return [(e, k, s, make_divisible(c_in * width_mult), make_divisible(c_out * width_mult),
             int(math.ceil(n * depth_mult))) for e, k, s, c_in, c_out, n in stages]


class MBConv(nn.Module):
    """1×1 expand (SiLU), depthwise k×k (SiLU), squeeze-excite (hidden in/4), linear 1×1 project;
    residual with stochastic depth when stride 1 and channels match."""

    features: int
    kernel: int
    stride: int
    expand_ratio: int
    drop_rate: float
    conv: ModuleDef
    norm: ModuleDef
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool):
        in_channels = x.shape[-1]
        expanded = make_divisible(in_channels * self.expand_ratio)
        y = x
        if expanded != in_channels:
            y = ConvBNAct(expanded, 1, self.conv, self.norm, activation=nn.silu, name="expand")(y)
        y = ConvBNAct(expanded, self.kernel, self.conv, self.norm, stride=self.stride,
                      depthwise=True, activation=nn.silu, name="depthwise")(y)
        y = SqueezeExcite(max(1, in_channels // 4), nn.silu, self.dtype, name="se")(y)
        y = ConvBNAct(self.features, 1, self.conv, self.norm, activation=None, name="project")(y)
        if self.stride == 1 and x.shape == y.shape:
            # Stochastic depth: drop the whole residual branch of a sample (rescaled by 1/(1-p)).
            drop = train and self.drop_rate > 0
            y = x + drop_path(y, self.drop_rate, self.make_rng("dropout") if drop else None, drop)
        return y


class EfficientNet(nn.Module):
    width_mult: float = 1.0
    depth_mult: float = 1.0
    dropout: float = 0.2
    num_classes: int | None = 1000
    stochastic_depth: float = 0.2
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype)
        norm = norm_def(train, self.dtype, self.bn_axis_name)
        stages = scale_stages(self.width_mult, self.depth_mult)
        x = jnp.asarray(x, self.dtype)
        x = ConvBNAct(stages[0][3], 3, conv, norm, stride=2, activation=nn.silu, name="stem")(x)
        total = sum(stage[-1] for stage in stages)
        block = 0
        for index, (expand, kernel, stride, _, channels, repeats) in enumerate(stages):
            for repeat in range(repeats):
                x = MBConv(channels, kernel, stride if repeat == 0 else 1, expand,
                           self.stochastic_depth * block / total, conv, norm, self.dtype,
                           name=f"stage{index + 1}_{repeat + 1}")(x, train)
                block += 1
        x = ConvBNAct(4 * stages[-1][4], 1, conv, norm, activation=nn.silu, name="head_conv")(x)
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train, self.dropout)


CONFIGS = {name: dict(width_mult=w, depth_mult=d, dropout=p)
           for name, (w, d, _, p) in COEFFICIENTS.items()}
RESOLUTIONS = {name: r for name, (_, _, r, _) in COEFFICIENTS.items()}
