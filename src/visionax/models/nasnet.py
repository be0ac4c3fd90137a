"""NASNet-A — Zoph, Vasudevan, Shlens, Le, "Learning Transferable Architectures for Scalable Image
Recognition" (CVPR 2018).

The idea: a searched cell. Instead of designing the network, a controller RNN trained with
reinforcement learning searched (on CIFAR-10) for two small cells — a Normal cell that keeps the
resolution and a Reduction cell that halves it — each combining its two inputs (the outputs of the two
previous cells) through five pairs of operations (separable convolutions, poolings, identity) that
are added and concatenated. The ImageNet network is those cells stacked: stem, N Normal cells,
Reduction, N Normal, Reduction, N Normal, with the filters doubling at each reduction.

`nasnet_a_large` is NASNet-A (6 @ 4032): N = 6, `filters` = 168 (the penultimate layer has 24·168 =
4032 channels), a 96-filter stem, 331×331 input. The layout follows Cadene's `pretrainedmodels`
`nasnetalarge` (the port of the TensorFlow-slim weights that timm also uses), including its TF-style
"SAME" padding emulation in the first reduction cell, and has its 88,753,150 parameters at 1000
classes (Keras `NASNetLarge` reports the same trainable count). `filters`, `stem_filters` and
`cells_per_stack` give smaller NASNets for CPU tests (filters must be a multiple of 4).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from visionax.models.common import (ModuleDef, avg_pool, classify, conv_def, global_avg_pool,
                                    max_pool, norm_def)


def _pad(amount: int, shift: int = 0):
    """Padding of every spatial dimension: `amount` each side, `shift` fewer at the start."""
    return ((amount - shift, amount),) * 2


class Branch(nn.Module):
    """ReLU, separable conv (stride), BN, ReLU, separable conv, BN — `BranchSeparables`.

    A separable conv is a depthwise k×k then a pointwise 1×1 (no biases); the first maps to
    `features` channels (the stem's branches change the channel count there). `shifted`: the first
    reduction cell's padding (Cadene pads one zero row/column at the top-left, convolves, and crops
    the first output row/column: for stride s that is `k // 2 + 1 - s` at the start, `k // 2` at the end).
    """

    features: int
    kernel: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef
    shifted: bool = False

    @nn.compact
    def __call__(self, x):
        k, p = self.kernel, self.kernel // 2
        first = _pad(p, self.stride - 1 if self.shifted else 0)
        for index, (stride, padding) in enumerate(((self.stride, first), (1, _pad(p)))):
            x = nn.relu(x)
            x = self.conv(x.shape[-1], (k, k), (stride, stride), padding=padding,
                          feature_group_count=x.shape[-1], name=f"separable{index + 1}_depthwise")(x)
            x = self.conv(self.features, (1, 1), name=f"separable{index + 1}_pointwise")(x)
            x = self.norm(name=f"bn{index + 1}")(x)
        return x


class ReluConvBN(nn.Module):
    """ReLU, 1×1 conv, BN: how a cell adapts an input to its filter count."""

    features: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        return self.norm(name="bn")(self.conv(self.features, (1, 1), name="conv")(nn.relu(x)))


class FactorizedReduction(nn.Module):
    """ReLU, then two stride-2 1×1 convs (half the filters each) on the pixel grid and on the grid
    shifted by one pixel, concatenated, BN: adapts the previous-but-one cell to half its resolution."""

    features: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x):
        x = nn.relu(x)
        shifted = jnp.pad(x[:, 1:, 1:], ((0, 0), (0, 1), (0, 1), (0, 0)))
        paths = [self.conv(self.features // 2, (1, 1), name=f"path{index + 1}_conv")(y[:, ::2, ::2])
                 for index, y in enumerate((x, shifted))]
        return self.norm(name="bn")(jnp.concatenate(paths, axis=-1))


def adapt(x_prev, x, features, conv, norm, name):
    """The previous-but-one cell's output at `x`'s resolution with `features` channels."""
    if x_prev.shape[1] != x.shape[1]:
        return FactorizedReduction(features, conv, norm, name=name)(x_prev)
    return ReluConvBN(features, conv, norm, name=name)(x_prev)


def _shifted_pool(x, pool):
    """Cadene's MaxPoolPad/AvgPoolPad: a zero row/column at the top-left, the 3×3/2 pool, crop."""
    return pool(jnp.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0))))[:, 1:, 1:]


class NormalCell(nn.Module):
    """NASNet-A Normal cell: output = concat(left, c0..c4), 6 × `filters` channels."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x, x_prev):
        branch = lambda kernel, name: Branch(self.filters, kernel, 1, self.conv, self.norm, name=name)
        avg3 = lambda y: avg_pool(y, 3, 1, padding=1, count_include_pad=False)
        left = adapt(x_prev, x, self.filters, self.conv, self.norm, "adapt_prev")
        right = ReluConvBN(self.filters, self.conv, self.norm, name="adapt")(x)
        c0 = branch(5, "comb0_left")(right) + branch(3, "comb0_right")(left)
        c1 = branch(5, "comb1_left")(left) + branch(3, "comb1_right")(left)
        c2 = avg3(right) + left
        c3 = avg3(left) + avg3(left)
        c4 = branch(3, "comb4_left")(right) + right
        return jnp.concatenate([left, c0, c1, c2, c3, c4], axis=-1)


class ReductionCell(nn.Module):
    """NASNet-A Reduction cell (and the two stem cells): halves the resolution; output =
    concat(c1..c4), 4 × `filters` channels. `x_prev=None`: the first stem cell, whose second input
    is `x` itself."""

    filters: int
    conv: ModuleDef
    norm: ModuleDef
    shifted: bool = False

    @nn.compact
    def __call__(self, x, x_prev=None):
        branch = lambda kernel, stride, name: Branch(self.filters, kernel, stride, self.conv,
                                                     self.norm, shifted=self.shifted, name=name)
        maxpool = lambda y: max_pool(y, 3, 2, padding=1)
        avgpool = lambda y: avg_pool(y, 3, 2, padding=1, count_include_pad=False)
        if self.shifted:
            maxpool, avgpool = (lambda y, pool=pool: _shifted_pool(y, pool) for pool in (maxpool, avgpool))
        a = ReluConvBN(self.filters, self.conv, self.norm, name="adapt")(x)
        b = x if x_prev is None else adapt(x_prev, a, self.filters, self.conv, self.norm, "adapt_prev")
        c0 = branch(5, 2, "comb0_left")(a) + branch(7, 2, "comb0_right")(b)
        c1 = maxpool(a) + branch(7, 2, "comb1_right")(b)
        c2 = avgpool(a) + branch(5, 2, "comb2_right")(b)
        c3 = avg_pool(c0, 3, 1, padding=1, count_include_pad=False) + c1
        c4 = branch(3, 1, "comb4_left")(c0) + maxpool(a)
        return jnp.concatenate([c1, c2, c3, c4], axis=-1)


class NASNet(nn.Module):
    num_classes: int | None = 1000
    filters: int = 168
    stem_filters: int = 96
    cells_per_stack: int = 6
    dropout: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype)
        norm = norm_def(train, self.dtype, self.bn_axis_name)
        f = self.filters
        x = jnp.asarray(x, self.dtype)
        x_conv0 = conv(self.stem_filters, (3, 3), (2, 2), padding=((0, 0), (0, 0)), name="conv0")(x)
        x_conv0 = norm(name="conv0_bn")(x_conv0)
        stem0 = ReductionCell(f // 4, conv, norm, name="cell_stem_0")(x_conv0)
        prev, cur = stem0, ReductionCell(f // 2, conv, norm, name="cell_stem_1")(stem0, x_conv0)
        index = 0
        for stack in range(3):
            if stack:  # reduction; the next cell's second input stays the cell before it
                cur = ReductionCell(f * 2**stack, conv, norm, shifted=stack == 1,
                                    name=f"reduction_cell_{stack - 1}")(cur, prev)
            for _ in range(self.cells_per_stack):
                prev, cur = cur, NormalCell(f * 2**stack, conv, norm, name=f"cell_{index}")(cur, prev)
                index += 1
        x = global_avg_pool(nn.relu(cur))
        return classify(x, self.num_classes, self.dtype, train, self.dropout)


CONFIGS = {"nasnet_a_large": {}}
RESOLUTIONS = {"nasnet_a_large": 331}
