"""Pieces every CNN in the zoo is built from: its convolution, its BatchNorm and its classifier head.

Convolutions use `visionax.layers.conv.conv_module(conv_impl)`; padding is explicit and symmetric
(`k // 2` on each side, as in PyTorch), so output sizes and weights line up with torchvision. Every
module computes in `dtype` and keeps float32 parameters. BatchNorm, dropout and the convolutions'
He init are the course's hand-written layers (`visionax.layers.norm.BatchNorm`,
`visionax.layers.regularize.Dropout` and `drop_path`, `visionax.layers.init.kaiming`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers import init
from visionax.layers.conv import conv_module
from visionax.layers.norm import BatchNorm
from visionax.layers.regularize import Dropout

ModuleDef = Callable[..., nn.Module]

# torchvision's conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_kernel_init = init.kaiming(mode="fan_out")

BN_MOMENTUM = 0.9  # flax's momentum = 1 - PyTorch's momentum (0.1)
BN_EPSILON = 1e-5


def pad(kernel: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style symmetric padding `kernel // 2` (keeps the size of a stride-1 convolution)."""
    return ((kernel // 2, kernel // 2),) * 2


def scaled(channels: int, width_mult: float) -> int:
    """`channels * width_mult` rounded, at least 1 (the `width_mult` option of small CPU models)."""
    return max(1, int(round(channels * width_mult)))


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to the nearest multiple of `divisor`, never below 90% of `value`
    (torchvision's `_make_divisible`, from the TensorFlow MobileNet/EfficientNet code)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_def(conv_impl: str, dtype: Any, **defaults) -> ModuleDef:
    """The model's convolution: `conv_module(conv_impl)` computing in `dtype` with float32 params.

    Defaults: no bias (a BatchNorm follows), torchvision's fan-out He init; keyword arguments change them.
    """
    options = dict(use_bias=False, kernel_init=conv_kernel_init, dtype=dtype,
                   param_dtype=jnp.float32)
    options.update(defaults)
    return functools.partial(conv_module(conv_impl), **options)


def norm_def(train: bool, dtype: Any, axis_name: str | None = None, splits: int = 1) -> ModuleDef:
    """The hand-written `visionax.layers.norm.BatchNorm` (momentum 0.9, epsilon 1e-5): batch statistics
    when `train`, synced over `axis_name`; with `splits` > 1, split BatchNorm: statistics per slice
    of batch/splits consecutive examples. Variables as flax's: params scale, bias; batch_stats mean, var."""
    return functools.partial(BatchNorm, use_running_average=not train, momentum=BN_MOMENTUM,
                             epsilon=BN_EPSILON, dtype=dtype, axis_name=axis_name, num_splits=splits)


def dense_def(dtype: Any, **defaults) -> ModuleDef:
    return functools.partial(nn.Dense, dtype=dtype, param_dtype=jnp.float32, **defaults)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x, axis=(1, 2))


FEATURE_MAP = "feature_map"


def pool_feature_map(module: nn.Module, feature_map: jnp.ndarray) -> jnp.ndarray:
    """Global average pooling `[N, h, w, C] → [N, C]` of a model's last feature map, which is sown
    as `intermediates/feature_map` first: the spatial features a captioner attends over
    (`visionax.models.captioners.encode`). Sowing costs nothing unless "intermediates" is mutable."""
    module.sow("intermediates", FEATURE_MAP, feature_map)
    return global_avg_pool(feature_map)


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jnp.ndarray:
    """PyTorch's `MaxPool2d(window, stride, padding, ceil_mode)` on NHWC (padding counts as -inf)."""
    pads = []
    for size in x.shape[1:3]:
        span = size + 2 * padding - window
        out = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (out - 1) * stride >= size + padding:
            out -= 1  # PyTorch drops a last window that would start in the right padding
        extra = max((out - 1) * stride + window - (size + 2 * padding), 0)
        pads.append((padding, padding + extra))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def adaptive_avg_pool(x: jnp.ndarray, size: int) -> jnp.ndarray:
    """PyTorch's `AdaptiveAvgPool2d(size)` on NHWC: bin `i` averages rows `floor(i*H/size)` to
    `ceil((i+1)*H/size)`. At a model's standard resolution it is the identity."""
    if x.shape[1:3] == (size, size):
        return x

    def bins(length):
        return [(i * length // size, -(-(i + 1) * length // size)) for i in range(size)]

    rows = [jnp.mean(x[:, a:b], axis=1) for a, b in bins(x.shape[1])]
    x = jnp.stack(rows, axis=1)
    cols = [jnp.mean(x[:, :, a:b], axis=2) for a, b in bins(x.shape[2])]
    return jnp.stack(cols, axis=2)


def avg_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0,
             count_include_pad: bool = True) -> jnp.ndarray:
    """PyTorch's `AvgPool2d(window, stride, padding, count_include_pad=...)` on NHWC."""
    y = nn.avg_pool(x, (window, window), (stride, stride), padding=((padding, padding),) * 2,
                    count_include_pad=count_include_pad)
    return y.astype(x.dtype)  # the count of a window is float32


class ConvBNAct(nn.Module):
    """Convolution (no bias; depthwise when `depthwise`), BatchNorm, then `activation` (None: linear).

    torchvision's `Conv2dNormActivation` / GoogLeNet's `BasicConv2d`; padding `kernel // 2`."""

    features: int
    kernel: int
    conv: ModuleDef
    norm: ModuleDef
    stride: int = 1
    depthwise: bool = False
    activation: Callable | None = nn.relu

    @nn.compact
    def __call__(self, x):
        x = self.conv(self.features, (self.kernel, self.kernel), (self.stride, self.stride),
                      padding=pad(self.kernel),
                      feature_group_count=x.shape[-1] if self.depthwise else 1, name="conv")(x)
        x = self.norm(name="bn")(x)
        return self.activation(x) if self.activation else x


class SqueezeExcite(nn.Module):
    """SENet's channel gate: `x * sigmoid(W2 activation(W1 mean_hw(x) + b1) + b2)`, `hidden` units.

    W1 and W2 are dense layers on the pooled vector (the same parameters as PyTorch's 1×1
    convolutions with bias)."""

    hidden: int
    activation: Callable = nn.relu
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        squeezed = jnp.mean(x, axis=(1, 2), keepdims=True)
        hidden = dense_def(self.dtype)(self.hidden, name="fc1")(squeezed)
        gate = dense_def(self.dtype)(x.shape[-1], name="fc2")(self.activation(hidden))
        return x * nn.sigmoid(gate)


def classify(features: jnp.ndarray, num_classes: int | None, dtype: Any, train: bool,
             dropout: float = 0.0) -> jnp.ndarray:
    """The classifier head, called inside a model's compact `__call__`: `Dense(num_classes)` named
    "head" on the pooled features (after `visionax.layers.regularize.Dropout` when `dropout` > 0 and
    `train`), or the features
    themselves when `num_classes` is None or 0 (an encoder for SimCLR/MoCo). Returns float32."""
    if not num_classes:
        return features.astype(jnp.float32)
    if dropout:
        features = Dropout(dropout)(features, train=train)
    return dense_def(dtype)(num_classes, name="head")(features).astype(jnp.float32)
