"""The tuning knobs of the portable CPU convolutions, as one frozen value passed in.

A knob changes which kernels compute a convolution (and so its speed and memory), never its value:
tests/layers/conv/test_tuning.py checks every setting against `lax.conv_general_dilated`.
`python -m bench.conv_micro` compares settings (its variants are `ConvTuning`s). The figures below
were measured with it on this project's 2-core AVX-512 Xeon (MEASUREMENTS.md).
"""

from __future__ import annotations

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class ConvTuning:
    """How "gemm", "winograd" and "auto" split their work (hashable: a static argument of jit)."""

    chunk_bytes: int = 16 << 20
    """Patches (and Winograd tiles) are built for batch chunks of about this many bytes, the
    chunks run one after another (`lax.map` / `lax.scan`); 0: the whole batch at once. 16 MiB
    keeps a chunk in cache: 3.2× faster than materialising the 300 MB of patches of 128 CIFAR
    images for a 64-feature 32×32 layer."""

    nt_min_features: int = 16
    """From this many input features on (one group), the gemm kernel gradient is the product of
    transposed patches `[K·C, M]` with dyᵀ `[O, M]`, both contracted on their minor axis: XLA's CPU
    dot runs that form at 230–275 GFLOP/s against ~105 for patchesᵀ · dy. Below it (e.g. an RGB
    stem) the two transposes cost more than they save."""

    dx_col2im_always: bool = False
    """True: the stride-1 input gradient by dy · wᵀ and col2im (a sum of prod(kernel) shifted pads)
    like the strided ones. False: as a transposed convolution through the gemm forward, whose
    contraction is prod(kernel) · out_features long and runs near the matmul peak."""

    custom_vjp: bool = True
    """False: the forward pass differentiated by JAX's own autodiff, which keeps every patch
    matrix alive for the backward pass (tried for the gemm path: no gain, more memory)."""

    auto_onednn: bool = True
    """"auto" on the CPU uses oneDNN's primitives wherever they apply and the library can be built:
    ResNet-18 (CIFAR) convolutions, forward and both gradients at batch 128, in 1.69 s against
    2.80 s for the best portable mix, 0.98 of the matmul peak."""

    auto_xla_only: bool | None = None
    """Without oneDNN, whether "auto" computes every pass of every convolution with XLA's own
    convolution instead of the mix below. None: from the jax version, True from jax 0.12 on. On
    the 2-core AMD EPYC of 2026-12-07 (`bench.conv_micro --variants xla,auto_without_onednn`,
    ResNet-18 CIFAR, batch 128): jax 0.12.1 XLA 3.49 s, the mix 3.65 s (XLA's convolutions got
    faster, the gemm passes slower); jax 0.10.2 XLA 4.33 s, the mix 2.98 s. XLA's path needs no
    compiler, so it is taken where it is at least as fast."""

    auto_xla_min_features: int = 128
    """Without oneDNN, "auto" computes the forward pass and the stride-1 input gradient with XLA's
    convolution for stride-1 kernels larger than 1×1 with at least this many input and output
    features per group (XLA's is near the matmul peak there; with 64 features gemm is faster)."""

    auto_xla_min_side: int = 8
    """… and output maps at least this big on every side: on 4×4 maps XLA's forward is 14 % slower
    than gemm, on 2×2 maps 7× slower (it mostly multiplies padding)."""

    def xla_only(self) -> bool:
        """`auto_xla_only`, None resolved by the installed jax's version."""
        if self.auto_xla_only is not None:
            return self.auto_xla_only
        return tuple(int(part) for part in jax.__version__.split(".")[:2]) >= (0, 12)
