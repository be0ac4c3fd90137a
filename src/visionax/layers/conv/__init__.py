"""Convolution implementations selectable for every Flax convolution of visionax (`conv_impl`).

Each is a function with `lax.conv_general_dilated`'s signature, which `nn.Conv` accepts as its
`conv_general_dilated` attribute (`conv_module(impl)` builds that `nn.Conv`):

* ``"xla"`` -- `lax.conv_general_dilated` itself (XLA's convolution; the fast one on GPU and TPU).
* ``"gemm"`` -- patch extraction ("im2col") and matrix products for the forward pass and both
  gradients (`gemm`): y = patches(x) · w, dw = patches(x)ᵀ · dy, dx as a transposed convolution
  (stride 1) or dy · wᵀ and col2im (other strides), in batch chunks; depthwise convolutions as a
  multiply-accumulate over the kernel taps. XLA's CPU convolution gradient is several times slower
  than its matrix product; this puts the arithmetic into matrix products.
* ``"winograd"`` -- Winograd's F(2×2, 3×3) (`winograd`) for every pass of the stride-1 3×3
  convolutions, 2.25× fewer multiplies than patches + dot; "gemm" for the others.
* ``"onednn"`` -- on the CPU, oneDNN's convolution primitives (the kernels behind PyTorch's CPU
  convolutions: direct convolutions on NHWC data near the matmul peak, no patch matrices) as XLA
  FFI calls (`onednn`, its library built on first use by `onednn_build`), for 2-D float32
  convolutions with non-negative padding and no input dilation, "gemm" for the other forms;
  XLA's elsewhere than on the CPU. Where the library cannot be built: a one-line UserError.
* ``"auto"`` -- elsewhere than on the CPU, ``"xla"``; on the CPU, ``"onednn"`` where it applies
  and its library can be built, else (at most one warning, none where oneDNN cannot exist, e.g.
  not on x86-64 Linux) from jax 0.12 on XLA's own convolutions (`ConvTuning.auto_xla_only`: as
  fast as the mix below there), before it per convolution and per pass whichever measured faster
  (`dispatch.auto_cpu_passes`): XLA's forward convolution and stride-1 input gradient for
  3×3-like stride-1 kernels with >= 128 features a side on maps of at least 8×8, gemm for
  everything else and for every kernel gradient.

All of them give the same values and gradients (tests/layers/conv/ checks them against
`lax.conv_general_dilated` to 1e-5 for strides, SAME/VALID/explicit padding, input and kernel
dilation, feature groups including depthwise, and other dimension numbers). A `ConvTuning` sets
the knobs that change their speed, never their values. Modules: `dispatch` (layout, routing,
"auto"), `passes` (a convolution pass by pass), `gemm`, `winograd`, `onednn` + `onednn.cc`,
`onednn_build`, `spec` (the canonical description), `tuning`.
"""

from __future__ import annotations

import functools

import flax.linen as nn

from visionax.layers.conv.dispatch import (CONV_IMPLS, conv_general_dilated_by_passes,
                                           conv_general_dilated_for)
from visionax.layers.conv.tuning import ConvTuning

__all__ = ["CONV_IMPLS", "ConvTuning", "conv_general_dilated_by_passes",
           "conv_general_dilated_for", "conv_module"]


def conv_module(impl: str = "xla", tuning: ConvTuning = ConvTuning()):
    """`nn.Conv` whose convolution is computed by `impl`, one of `CONV_IMPLS`, tuned by `tuning`."""
    return functools.partial(nn.Conv,
                             conv_general_dilated=conv_general_dilated_for(impl, tuning=tuning))
