"""Convolution micro-benchmark: the conv layers of a network, forward + backward.

    python -m bench.conv_micro [--net cifar|small|depthwise] [--batch 128] [--reps 3]
                               [--variants xla,gemm,...]

Networks (`--net`): `cifar` is ResNet-18 with the CIFAR stem and width 64 on 32×32 images (issue 7's
model); `small` is ResNet-18 with the ImageNet stem (7×7/2 convolution, max-pool) and width 32 on
32×32 images, the encoder of the CIFAR-10 SimCLR/MoCo quality runs, whose last stages run on 2×2
and 1×1 maps; `depthwise` is three depthwise 3×3 convolutions (MobileNet-style) at CIFAR sizes.

Variants (`VARIANTS`): each conv_impl (xla, gemm, winograd, onednn, auto), `auto_without_onednn`
(what "auto" does where oneDNN cannot be built), `auto_mix` (its per-pass mix, taken before jax 0.12),
"gemm" under other `visionax.layers.conv.ConvTuning`s (gemm_unchunked, gemm_chunk1M … gemm_chunk64M,
gemm_col2im, gemm_autodiff), and per-pass mixes such as x_x_g / g_x_g / w_w_g / x_x_w (forward,
input grad, kernel grad; x = XLA, g = gemm, w = Winograd where it applies, gemm elsewhere).
Each distinct layer is timed on its own (value, input gradient and kernel gradient; the stem
needs no input gradient) and weighted by how often it occurs in the network, so the total is the
convolution time of one training step. Prints ms per layer, the total, images/s of the conv stack
alone, and achieved FLOP/s as a fraction of a matmul peak measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bench.common import matmul_peak
from visionax.layers.conv import (ConvTuning, conv_general_dilated_by_passes,
                                  conv_general_dilated_for)


class Layer(NamedTuple):
    """One convolution of a network: square input maps of side `size`, `count` of them."""

    name: str
    size: int
    in_features: int
    out_features: int
    kernel: int
    stride: int
    count: int
    groups: int = 1


CIFAR_LAYERS = [
    Layer("stem 3x3 3>64 @32", 32, 3, 64, 3, 1, 1),
    Layer("3x3 64>64 @32", 32, 64, 64, 3, 1, 4),
    Layer("3x3/2 64>128 @32", 32, 64, 128, 3, 2, 1),
    Layer("1x1/2 64>128 @32", 32, 64, 128, 1, 2, 1),
    Layer("3x3 128>128 @16", 16, 128, 128, 3, 1, 3),
    Layer("3x3/2 128>256 @16", 16, 128, 256, 3, 2, 1),
    Layer("1x1/2 128>256 @16", 16, 128, 256, 1, 2, 1),
    Layer("3x3 256>256 @8", 8, 256, 256, 3, 1, 3),
    Layer("3x3/2 256>512 @8", 8, 256, 512, 3, 2, 1),
    Layer("1x1/2 256>512 @8", 8, 256, 512, 1, 2, 1),
    Layer("3x3 512>512 @4", 4, 512, 512, 3, 1, 3),
]
SMALL_LAYERS = [
    Layer("stem 7x7/2 3>32 @32", 32, 3, 32, 7, 2, 1),
    Layer("3x3 32>32 @8", 8, 32, 32, 3, 1, 4),
    Layer("3x3/2 32>64 @8", 8, 32, 64, 3, 2, 1),
    Layer("1x1/2 32>64 @8", 8, 32, 64, 1, 2, 1),
    Layer("3x3 64>64 @4", 4, 64, 64, 3, 1, 3),
    Layer("3x3/2 64>128 @4", 4, 64, 128, 3, 2, 1),
    Layer("1x1/2 64>128 @4", 4, 64, 128, 1, 2, 1),
    Layer("3x3 128>128 @2", 2, 128, 128, 3, 1, 3),
    Layer("3x3/2 128>256 @2", 2, 128, 256, 3, 2, 1),
    Layer("1x1/2 128>256 @2", 2, 128, 256, 1, 2, 1),
    Layer("3x3 256>256 @1", 1, 256, 256, 3, 1, 3),
]
# the depthwise 3×3 convolutions of MobileNet-style blocks at CIFAR sizes
DEPTHWISE_LAYERS = [
    Layer("dw 3x3 64 @32", 32, 64, 64, 3, 1, 1, groups=64),
    Layer("dw 3x3/2 128 @16", 16, 128, 128, 3, 2, 1, groups=128),
    Layer("dw 3x3 256 @8", 8, 256, 256, 3, 1, 1, groups=256),
]
NETWORKS = {"cifar": CIFAR_LAYERS, "small": SMALL_LAYERS, "depthwise": DEPTHWISE_LAYERS}

G, X, W = "gemm", "xla", "winograd"
# name -> (a conv_impl, or the (forward, input gradient, kernel gradient) implementations; the
# ConvTuning fields that differ from the defaults)
VARIANTS = {
    "xla": ("xla", {}),
    "gemm": ("gemm", {}),
    "winograd": ("winograd", {}),  # Winograd F(2×2, 3×3) where it applies, gemm elsewhere
    "onednn": ("onednn", {}),  # oneDNN's primitives for every pass
    "auto": ("auto", {}),  # whatever conv_impl="auto" is on this backend
    "auto_without_onednn": ("auto", {"auto_onednn": False}),  # from jax 0.12 on: XLA's
    "auto_mix": ("auto", {"auto_onednn": False, "auto_xla_only": False}),  # the per-pass mix
    "gemm_unchunked": ("gemm", {"chunk_bytes": 0}),
    "gemm_chunk1M": ("gemm", {"chunk_bytes": 1 << 20}),
    "gemm_chunk8M": ("gemm", {"chunk_bytes": 8 << 20}),
    "gemm_chunk16M": ("gemm", {"chunk_bytes": 16 << 20}),
    "gemm_chunk32M": ("gemm", {"chunk_bytes": 32 << 20}),
    "gemm_chunk64M": ("gemm", {"chunk_bytes": 64 << 20}),
    "gemm_col2im": ("gemm", {"dx_col2im_always": True}),
    "gemm_autodiff": ("gemm", {"custom_vjp": False}),
    "x_x_g": ((X, X, G), {}),
    "x_x_g_16M": ((X, X, G), {"chunk_bytes": 16 << 20}),
    "g_x_g_16M": ((G, X, G), {"chunk_bytes": 16 << 20}),
    "g_x_g": ((G, X, G), {}),
    "x_g_g": ((X, G, G), {}),
    "w_w_g": ((W, W, G), {}),
    "g_g_w": ((G, G, W), {}),
    "x_x_w": ((X, X, W), {}),
    "w_x_w": ((W, X, W), {}),
}


def variant_conv(name: str):
    """The convolution (`lax.conv_general_dilated`'s signature) of variant `name`."""
    impl, knobs = VARIANTS[name]
    tuning = ConvTuning(**knobs)
    if isinstance(impl, tuple):
        return conv_general_dilated_by_passes(impl, tuning)
    return conv_general_dilated_for(impl, tuning)


def layer_fn(conv, stride, pad, need_dx, groups=1):
    kw = dict(window_strides=(stride, stride), padding=((pad, pad), (pad, pad)),
              dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups)

    def f(x, w, dy):
        if need_dx:
            y, vjp = jax.vjp(lambda x, w: conv(x, w, **kw), x, w)
            return (y, *vjp(dy))
        y, vjp = jax.vjp(lambda w: conv(x, w, **kw), w)
        return (y, *vjp(dy))

    return jax.jit(f)


def time_fn(f, args, reps):
    jax.block_until_ready(f(*args))  # compile + warm up
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(f(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", choices=sorted(NETWORKS), default="cifar")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--variants", default="xla,gemm,auto",
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = ap.parse_args(argv)
    names = args.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    peak = matmul_peak()
    print(f"backend {jax.default_backend()}, net {args.net}, batch {args.batch}, matmul peak {peak / 1e9:.0f} GFLOP/s")
    rng = np.random.default_rng(0)
    totals = {n: 0.0 for n in names}
    flops_total = 0.0
    print(f"{'layer':22s} {'x':>3s} " + " ".join(f"{n:>18s}" for n in names) + "  (ms, fwd+bwd)")
    for lname, h, cin, cout, k, s, count, groups in NETWORKS[args.net]:
        x = jnp.asarray(rng.standard_normal((args.batch, h, h, cin), dtype=np.float32))
        w = jnp.asarray(rng.standard_normal((k, k, cin // groups, cout), dtype=np.float32) * 0.05)
        ho = (h + 2 * (k // 2) - k) // s + 1
        dy = jnp.asarray(rng.standard_normal((args.batch, ho, ho, cout), dtype=np.float32))
        need_dx = not lname.startswith("stem")
        macs = args.batch * ho * ho * cout * k * k * cin // groups
        flops_total += count * 2 * macs * (3 if need_dx else 2)
        row = []
        for n in names:
            dt = time_fn(layer_fn(variant_conv(n), s, k // 2, need_dx, groups), (x, w, dy),
                         args.reps)
            totals[n] += count * dt
            row.append(dt)
        print(f"{lname:22s} {count:3d} " + " ".join(f"{1e3 * t:18.1f}" for t in row), flush=True)
    print(f"{'total (weighted)':26s} " + " ".join(f"{1e3 * totals[n]:18.1f}" for n in names))
    print(f"{'images/s (convs only)':26s} " + " ".join(f"{args.batch / totals[n]:18.1f}" for n in names))
    print(f"{'fraction of matmul peak':26s} "
          + " ".join(f"{flops_total / totals[n] / peak:18.2f}" for n in names))
    print(f"conv FLOPs per step (fwd+bwd): {flops_total / 1e9:.1f} GFLOP")


if __name__ == "__main__":
    main()
