"""MobileNet v1 and v2: convolutional networks for phones, built from depthwise separable convolutions.

- MobileNet — Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
  Applications" (2017). The idea: depthwise separable convolutions. A 3×3 convolution over C_in
  channels to C_out is split into a depthwise 3×3 (one filter per channel) and a pointwise 1×1 that
  mixes channels: 9·C_in + C_in·C_out weights and MACs per position instead of 9·C_in·C_out, about
  8–9× cheaper. Layout of the paper's Table 1 as timm's `mobilenetv1_100` and Keras' `MobileNet`
  (α = 1): 4,231,976 trainable parameters at 1000 classes.
- MobileNetV2 — Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (CVPR
  2018). Inverted residual blocks: 1×1 expansion (×6), depthwise 3×3, linear 1×1 projection (no ReLU
  on the narrow output), with a residual connection between the narrow ends. Layout and parameter
  count (3,504,872) are torchvision's `mobilenet_v2`.

`width_mult` is the paper's width multiplier α (channels rounded to multiples of 8).
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from visionax.models.common import (ConvBNAct, ModuleDef, classify, conv_def, pool_feature_map,
                                    make_divisible, norm_def)


ConvBNReLU6 = functools.partial(ConvBNAct, activation=nn.relu6)


# MobileNet v1 (paper Table 1): (output channels, stride) of the 13 depthwise separable blocks.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class MobileNetV1(nn.Module):
    num_classes: int | None = 1000
    width_mult: float = 1.0
    dropout: float = 0.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype)
        norm = norm_def(train, self.dtype, self.bn_axis_name)
        x = jnp.asarray(x, self.dtype)
        x = ConvBNReLU6(make_divisible(32 * self.width_mult), 3, conv, norm, stride=2, name="stem")(x)
        for index, (channels, stride) in enumerate(V1_BLOCKS):
            x = ConvBNReLU6(x.shape[-1], 3, conv, norm, stride=stride, depthwise=True,
                          name=f"block{index + 1}_dw")(x)
            x = ConvBNReLU6(make_divisible(channels * self.width_mult), 1, conv, norm,
                          name=f"block{index + 1}_pw")(x)
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train, self.dropout)


class InvertedResidual(nn.Module):
    """1×1 expand (ReLU6), depthwise 3×3 (ReLU6), linear 1×1 project; residual when shapes allow."""

    features: int
    stride: int
    expand_ratio: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        hidden = int(round(x.shape[-1] * self.expand_ratio))
        y = x
        if self.expand_ratio != 1:
            y = ConvBNReLU6(hidden, 1, self.conv, self.norm, name="expand")(y)
        y = ConvBNReLU6(hidden, 3, self.conv, self.norm, stride=self.stride, depthwise=True,
                      name="depthwise")(y)
        y = ConvBNReLU6(self.features, 1, self.conv, self.norm, activation=None, name="project")(y)
        return x + y if self.stride == 1 and x.shape == y.shape else y


# MobileNetV2 (paper Table 2): expansion t, channels c, repeats n, first stride s.
V2_BLOCKS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
             (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
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
        x = jnp.asarray(x, self.dtype)
        x = ConvBNReLU6(make_divisible(32 * self.width_mult), 3, conv, norm, stride=2, name="stem")(x)
        for stage, (t, c, n, s) in enumerate(V2_BLOCKS):
            for index in range(n):
                x = InvertedResidual(make_divisible(c * self.width_mult), s if index == 0 else 1, t,
                                     conv, norm, name=f"block{stage + 1}_{index + 1}")(x)
        last = make_divisible(1280 * max(1.0, self.width_mult))
        x = ConvBNReLU6(last, 1, conv, norm, name="last_conv")(x)
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train, self.dropout)


V1_CONFIGS = {"mobilenet_v1": {}}
V2_CONFIGS = {"mobilenet_v2": {}}
