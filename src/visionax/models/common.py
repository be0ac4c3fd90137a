"""Pieces every CNN in the zoo is built from: its convolution, its BatchNorm and its classifier head.

Convolutions use `visionax.layers.conv.conv_module(conv_impl)`; padding is explicit and symmetric
(`k // 2` on each side, as in PyTorch), so output sizes and weights line up with torchvision. Every
module computes in `dtype` and keeps float32 parameters.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers.conv import conv_module

ModuleDef = Callable[..., nn.Module]

# torchvision's conv init: kaiming_normal_(mode="fan_out", nonlinearity="relu").
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

BN_MOMENTUM = 0.9  # flax's momentum = 1 - PyTorch's momentum (0.1)
BN_EPSILON = 1e-5


def pad(kernel: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """PyTorch-style symmetric padding that keeps the size of a stride-1 convolution."""
    p = dilation * (kernel - 1) // 2
    return ((p, p), (p, p))


def conv_def(conv_impl: str, dtype: Any, **defaults) -> ModuleDef:
    """The model's convolution: `conv_module(conv_impl)` computing in `dtype` with float32 params.

    Defaults: no bias (a BatchNorm follows), torchvision's fan-out He init; keyword arguments change them.
    """
    options = dict(use_bias=False, kernel_init=conv_kernel_init, dtype=dtype,
                   param_dtype=jnp.float32)
    options.update(defaults)
    return functools.partial(conv_module(conv_impl), **options)


def norm_def(train: bool, dtype: Any, axis_name: str | None = None, **defaults) -> ModuleDef:
    """`nn.BatchNorm` (momentum 0.9, epsilon 1e-5), batch statistics when `train`, synced over `axis_name`."""
    options = dict(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPSILON,
                   dtype=dtype, param_dtype=jnp.float32, axis_name=axis_name)
    options.update(defaults)
    return functools.partial(nn.BatchNorm, **options)


def dense_def(dtype: Any, **defaults) -> ModuleDef:
    return functools.partial(nn.Dense, dtype=dtype, param_dtype=jnp.float32, **defaults)


def global_avg_pool(x: jnp.ndarray) -> jnp.ndarray:
    return jnp.mean(x, axis=(1, 2))


def max_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0,
             ceil_mode: bool = False) -> jnp.ndarray:
    """PyTorch's `MaxPool2d(window, stride, padding, ceil_mode)` on NHWC (padding counts as -inf)."""
    pads = []
    for size in x.shape[1:3]:
        extra = 0
        if ceil_mode:
            full = size + 2 * padding - window
            if full % stride:
                extra = stride - full % stride
                # PyTorch drops a last window that would start inside the right padding.
                if (full + extra) // stride * stride >= size + padding:
                    extra -= stride
        pads.append((padding, padding + max(extra, 0)))
    return nn.max_pool(x, (window, window), (stride, stride), padding=pads)


def avg_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0,
             count_include_pad: bool = True) -> jnp.ndarray:
    """PyTorch's `AvgPool2d(window, stride, padding, count_include_pad=...)` on NHWC."""
    return nn.avg_pool(x, (window, window), (stride, stride), padding=((padding, padding),) * 2,
                       count_include_pad=count_include_pad)


def classify(features: jnp.ndarray, num_classes: int | None, dtype: Any, train: bool,
             dropout: float = 0.0) -> jnp.ndarray:
    """The classifier head, called inside a model's compact `__call__`: `Dense(num_classes)` named
    "head" on the pooled features (after dropout when `dropout` > 0 and `train`), or the features
    themselves when `num_classes` is None or 0 (an encoder for SimCLR/MoCo). Returns float32."""
    if not num_classes:
        return features.astype(jnp.float32)
    if dropout:
        features = nn.Dropout(dropout, deterministic=not train)(features)
    return dense_def(dtype)(num_classes, name="head")(features).astype(jnp.float32)
