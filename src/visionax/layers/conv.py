"""Convolution implementations selectable for every Flax convolution in visionax (config `conv_impl`).

Five choices, each a function with `lax.conv_general_dilated`'s signature that `nn.Conv` accepts
as its `conv_general_dilated` attribute:

* ``"xla"``  -- `lax.conv_general_dilated` itself (XLA's convolution; the fast one on GPU and TPU).
* ``"gemm"`` -- patch extraction ("im2col") followed by one matrix product (`lax.dot_general`) per
  feature group. XLA's CPU convolution, and above all its gradient, is several times slower than
  its matrix product; this path moves all the arithmetic into matrix products, including the
  backward pass (a `jax.custom_vjp`):

  - kernel gradient: ``patches^T @ dy`` (one matrix product, the patches recomputed from the input
    rather than kept alive from the forward pass);
  - input gradient, stride 1: the transposed convolution written again as patches + one matrix
    product (``dy`` padded, kernel flipped and its in/out features swapped), whose contraction is
    ``kernel_size * out_features`` long and so runs near the matmul peak;
  - input gradient, other strides / input dilation: ``dy @ w^T`` then the exact transpose of the
    patch extraction (a sum of shifted, zero-interleaved pads), i.e. col2im.

  Depthwise convolutions (one input feature per group) are a multiply-accumulate over the kernel
  taps instead: a matrix product with a contraction of length ``prod(kernel_size)`` would waste
  the matmul unit, while the elementwise form fuses into one loop without materialising patches.
* ``"winograd"`` -- Winograd's F(2×2, 3×3) (`visionax.layers.winograd`) for every pass of the
  stride-1 3×3 convolutions, 2.25× fewer multiplies than patches + dot; "gemm" for the others.
* ``"onednn"`` -- on the CPU, oneDNN's convolution primitives (the kernels behind PyTorch's CPU
  convolutions: direct convolutions on NHWC data near the matmul peak, no patch matrices) as XLA
  FFI calls (`visionax.layers.onednn_conv`), for 2-D float32 convolutions with non-negative padding
  and no input dilation, "gemm" for the other forms; XLA's elsewhere than on the CPU.
* ``"auto"`` -- elsewhere than on the CPU, ``"xla"``; on the CPU, ``"onednn"`` where it applies
  and its library can be built (`_AUTO_ONEDNN`), else per convolution and per pass whichever
  measured faster (`_auto_cpu_passes`): XLA's forward convolution and stride-1 input gradient for
  3x3-like stride-1 kernels with >= 128 features a side on maps of at least 8x8, gemm for
  everything else and for every kernel gradient. Decided at trace time from the default backend.

All of them give the same values and gradients (tests/test_conv.py checks them against
`lax.conv_general_dilated` to 1e-5 for strides, SAME/VALID/explicit padding, input and kernel
dilation, feature groups including depthwise, and other dimension numbers).
"""

from __future__ import annotations

import functools
import itertools
import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from visionax.errors import UserError
from visionax.layers import onednn_conv, winograd

CONV_IMPLS = ("xla", "gemm", "winograd", "onednn", "auto")

# Tuning of "gemm", read at trace time (bench/conv_micro.py compares the choices):
# patches are built for batch chunks of about this many bytes (0: whole batch at once);
_CHUNK_BYTES = 16 << 20
# "auto" on the CPU uses XLA's forward convolution for stride-1 kernels with at least this many
# input and output features per group (see _auto_cpu_passes) and output maps at least this big
# on every side;
_AUTO_XLA_MIN_FEATURES = 128
_AUTO_XLA_MIN_SIDE = 8
# "auto" on the CPU uses oneDNN wherever it applies and can be built;
_AUTO_ONEDNN = True
# kernel gradient as (K*C, M) x (O, M)^T from this many input features on;
_NT_MIN_FEATURES = 16
# compute the stride-1 input gradient by col2im instead of a transposed convolution;
_DX_COL2IM_ALWAYS = False
# False: JAX's own autodiff of patches + dot (keeps every patch matrix alive).
_USE_CUSTOM_VJP = True


class _Cfg(NamedTuple):
    """Static description of one convolution in canonical layout x: (N, *S, C), w: (*K, C/G, O)."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    groups: int
    precision: object
    preferred_element_type: object


def _out_size(size: int, k: int, stride: int, rdil: int) -> int:
    eff = (k - 1) * rdil + 1
    return max(0, (size - eff) // stride + 1) if size >= eff else 0


def _padded(x, cfg: _Cfg, channels_first: bool = False):
    """x zero-padded (negative pads crop) and interleaved with zeros for the input dilation.

    Layout (N, *S, C), or (C, N, *S) when `channels_first`."""
    spatial = [(lo, hi, d - 1) for (lo, hi), d in zip(cfg.pads, cfg.lhs_dilation)]
    config = [(0, 0, 0)] * 2 + spatial if channels_first else [(0, 0, 0)] + spatial + [(0, 0, 0)]
    if all(c == (0, 0, 0) for c in config):
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _taps(x, cfg: _Cfg, channels_first: bool = False):
    """The strided window slices of the padded input, one per kernel tap (row-major kernel order):
    a list of (N, *O, C), or of (C, N, *O) when `channels_first`."""
    xp = _padded(x, cfg, channels_first)
    spatial = xp.shape[2:] if channels_first else xp.shape[1:-1]
    outs = [
        _out_size(s, k, st, r)
        for s, k, st, r in zip(spatial, cfg.kernel, cfg.strides, cfg.rhs_dilation)
    ]
    taps = []
    for offs in itertools.product(*[range(k) for k in cfg.kernel]):
        start = [o * r for o, r in zip(offs, cfg.rhs_dilation)]
        limit = [b + (m - 1) * st + 1 if m > 0 else b for b, m, st in zip(start, outs, cfg.strides)]
        if channels_first:
            c, n = xp.shape[:2]
            taps.append(lax.slice(xp, (0, 0, *start), (c, n, *limit), (1, 1, *cfg.strides)))
        else:
            n, c = xp.shape[0], xp.shape[-1]
            taps.append(
                lax.slice(xp, (0, *start, 0), (n, *limit, c), (1, *cfg.strides, 1))
            )
    return taps


def _patches(x, cfg: _Cfg):
    """im2col: (N, *S, C) -> (N, *O, K, C), K = prod(kernel), taps in row-major kernel order."""
    taps = _taps(x, cfg)
    if len(taps) == 1:
        return taps[0][..., None, :]
    return jnp.stack(taps, axis=-2)


def _accumulation(a, b, cfg: _Cfg):
    """(dtype the product is accumulated in, dtype it is returned in).

    16-bit floats are accumulated in float32 and rounded once at the end: more accurate than a
    16-bit result type, and on CPUs with AMX/AVX512-BF16 XLA's dot is several times faster with
    a float32 accumulator than without (bf16 x bf16 -> f32 runs on the matrix unit)."""
    if cfg.preferred_element_type is not None:
        return cfg.preferred_element_type, cfg.preferred_element_type
    out = jnp.result_type(a.dtype, b.dtype)
    if jnp.issubdtype(out, jnp.floating) and jnp.finfo(out).bits < 32:
        return jnp.dtype(jnp.float32), out
    return None, out


def _dot(a, b, dims, cfg: _Cfg):
    acc, out = _accumulation(a, b, cfg)
    y = lax.dot_general(a, b, dims, precision=cfg.precision, preferred_element_type=acc)
    return y.astype(out)


def _out_spatial(spatial, cfg: _Cfg) -> tuple[int, ...]:
    return tuple(
        _out_size((s - 1) * d + 1 + lo + hi if s > 0 else lo + hi, k, st, r)
        for s, (lo, hi), d, k, st, r in zip(
            spatial, cfg.pads, cfg.lhs_dilation, cfg.kernel, cfg.strides, cfg.rhs_dilation
        )
    )


def _batch_chunk(x_shape, itemsize: int, cfg: _Cfg) -> int:
    """Examples per chunk so that one chunk's patches take about `_CHUNK_BYTES` (divides N).

    Materialising the patches of the whole batch (e.g. 300 MB for 128 CIFAR images at 64
    features) makes the gemm path memory-bound; a chunk whose patches stay in cache costs
    little next to its matrix product.
    """
    n = x_shape[0]
    per_example = (
        math.prod(_out_spatial(x_shape[1:-1], cfg)) * math.prod(cfg.kernel) * x_shape[-1] * itemsize
    )
    if _CHUNK_BYTES <= 0 or per_example * n <= _CHUNK_BYTES:
        return n
    chunk = max(1, _CHUNK_BYTES // max(per_example, 1))
    while n % chunk:
        chunk -= 1
    return chunk


def _map_chunks(fn, chunk: int, *arrays):
    """fn applied to batch chunks of `arrays` (leading axis), outputs concatenated (lax.map)."""
    n = arrays[0].shape[0]
    if chunk >= n:
        return fn(*arrays)
    split = tuple(a.reshape(n // chunk, chunk, *a.shape[1:]) for a in arrays)
    out = lax.map(lambda args: fn(*args), split)
    return out.reshape(n, *out.shape[2:])


def _gemm_forward(x, w, cfg: _Cfg):
    """Patches + one matrix product per group (batched over groups), in batch chunks."""
    chunk = _batch_chunk(x.shape, x.dtype.itemsize, cfg)
    return _map_chunks(lambda xc: _gemm_from_patches(_patches(xc, cfg), w, cfg), chunk, x)


def _gemm_from_patches(p, w, cfg: _Cfg):
    lead = p.shape[:-2]
    m = math.prod(lead)
    k = p.shape[-2]
    c = p.shape[-1]
    o = w.shape[-1]
    g = cfg.groups
    if g == 1:
        y = _dot(p.reshape(m, k * c), w.reshape(k * c, o), (((1,), (0,)), ((), ())), cfg)
    else:
        cg, og = c // g, o // g
        y = _dot(
            p.reshape(m, k, g, cg),
            w.reshape(k, cg, g, og),
            (((1, 3), (0, 1)), ((2,), (2,))),
            cfg,
        )  # (G, M, Og)
        y = jnp.transpose(y, (1, 0, 2)).reshape(m, o)
    return y.reshape(*lead, o)


def _gemm_kernel_grad(x, dy, w_shape, cfg: _Cfg):
    """dW = patches^T @ dy (per group), accumulated over batch chunks."""
    g = cfg.groups
    c, o = x.shape[-1], dy.shape[-1]
    cg, og = c // g, o // g
    k = math.prod(cfg.kernel)

    def chunk_grad(xc, dyc):
        m = math.prod(dyc.shape[:-1])
        if g == 1 and c >= _NT_MIN_FEATURES:
            # Transposed patches (K*C, M) against dy^T (O, M), both contracted on their minor
            # axis: XLA's CPU dot runs this form at 2-3x the speed of patches^T @ dy (the
            # transposes cost more than they save for a few input features, e.g. an RGB stem).
            xt = jnp.moveaxis(xc, -1, 0)
            pt = jnp.stack(_taps(xt, cfg, channels_first=True), axis=0).reshape(k * c, m)
            dyt = jnp.moveaxis(dyc, -1, 0).reshape(o, m)
            return _dot(pt, dyt, (((1,), (1,)), ((), ())), cfg)  # (K*C, O)
        p = _patches(xc, cfg).reshape(m, k, g, cg)
        d = dyc.reshape(m, o)
        if g == 1:
            return _dot(p.reshape(m, k * c), d, (((0,), (0,)), ((), ())), cfg)  # (K*C, O)
        dw = _dot(p, d.reshape(m, g, og), (((0,), (0,)), ((2,), (1,))), cfg)  # (G, K, Cg, Og)
        return jnp.transpose(dw, (1, 2, 0, 3))

    chunk = _batch_chunk(x.shape, x.dtype.itemsize, cfg)
    return _sum_over_chunks(chunk_grad, chunk, x, dy).reshape(w_shape)


def _sum_over_chunks(fn, chunk: int, x, dy):
    """Σ of fn(x chunk, dy chunk) over batch chunks (lax.scan), e.g. a kernel gradient."""
    n = x.shape[0]
    if chunk >= n:
        return fn(x, dy)
    xs = x.reshape(n // chunk, chunk, *x.shape[1:])
    dys = dy.reshape(n // chunk, chunk, *dy.shape[1:])
    shape = jax.eval_shape(fn, xs[0], dys[0])
    total, _ = lax.scan(lambda total, a: (total + fn(*a), None),
                        jnp.zeros(shape.shape, shape.dtype), (xs, dys))
    return total


def _gemm_input_grad(x_shape, x_dtype, w, dy, cfg: _Cfg):
    """dx: for unit strides a transposed convolution as patches + dot, else dy @ w^T + col2im."""
    g = cfg.groups
    c, o = x_shape[-1], w.shape[-1]
    cg, og = c // g, o // g
    k = math.prod(cfg.kernel)
    unit = all(s == 1 for s in cfg.strides) and all(d == 1 for d in cfg.lhs_dilation)
    if unit and k > 1 and not _DX_COL2IM_ALWAYS:
        return _gemm_forward(dy.astype(w.dtype), _transposed_kernel(w, cfg), _transposed_cfg(cfg))

    def chunk_grad(dyc):
        m = math.prod(dyc.shape[:-1])
        d = dyc.reshape(m, o)
        if g == 1:
            dp = _dot(d, w.reshape(k * c, o), (((1,), (1,)), ((), ())), cfg)  # (M, K*C)
        else:
            dp = _dot(
                d.reshape(m, g, og), w.reshape(k, cg, g, og), (((2,), (3,)), ((1,), (2,))), cfg
            )  # (G, M, K, Cg)
            dp = jnp.transpose(dp, (1, 2, 0, 3))
        dp = dp.reshape(*dyc.shape[:-1], k, c).astype(x_dtype)
        primal = jax.ShapeDtypeStruct((dyc.shape[0], *x_shape[1:]), x_dtype)
        (dxc,) = jax.linear_transpose(lambda v: _patches(v, cfg), primal)(dp)
        return dxc

    chunk = _batch_chunk(x_shape, jnp.dtype(x_dtype).itemsize, cfg)
    return _map_chunks(chunk_grad, chunk, dy)


def _depthwise(x, w, cfg: _Cfg):
    """One input feature per group: multiply-accumulate over the kernel taps (fuses, no patches)."""
    c = x.shape[-1]
    o = w.shape[-1]
    mult = o // c
    wk = w.reshape(-1, c, mult)  # (K, C, multiplier): output feature g*mult + j uses input g
    acc_dtype = cfg.preferred_element_type or jnp.result_type(x.dtype, w.dtype)
    y = None
    for i, t in enumerate(_taps(x, cfg)):
        term = t.astype(acc_dtype)[..., None] * wk[i].astype(acc_dtype)
        y = term if y is None else y + term
    return y.reshape(*y.shape[:-2], o)


def _transposed_cfg(cfg: _Cfg) -> _Cfg:
    """Config of the stride-1 input gradient as a forward convolution of dy."""
    pads = tuple(
        ((k - 1) * r - lo, (k - 1) * r - hi)
        for (lo, hi), k, r in zip(cfg.pads, cfg.kernel, cfg.rhs_dilation)
    )
    return cfg._replace(pads=pads)


def _transposed_kernel(w, cfg: _Cfg):
    """(*K, Cg, G*Og) -> flipped (*K, Og, G*Cg) so that dx = conv(dy, it) with groups G."""
    nk = len(cfg.kernel)
    g = cfg.groups
    cg, o = w.shape[-2], w.shape[-1]
    og = o // g
    wt = w.reshape(*cfg.kernel, cg, g, og)
    wt = jnp.transpose(wt, (*range(nk), nk + 2, nk + 1, nk))  # (*K, Og, G, Cg)
    wt = wt.reshape(*cfg.kernel, og, g * cg)
    return lax.rev(wt, tuple(range(nk)))


def _xla_conv(x, w, cfg: _Cfg):
    """lax.conv_general_dilated in the canonical layout."""
    nsp = len(cfg.kernel)
    spatial = "DHW"[-nsp:] if nsp <= 3 else None
    dn = (
        ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
        if spatial
        else lax.ConvDimensionNumbers(
            (0, nsp + 1, *range(1, nsp + 1)),
            (nsp + 1, nsp, *range(nsp)),
            (0, nsp + 1, *range(1, nsp + 1)),
        )
    )
    acc, out = _accumulation(x, w, cfg)
    y = lax.conv_general_dilated(
        x, w, cfg.strides, cfg.pads, cfg.lhs_dilation, cfg.rhs_dilation, dn, cfg.groups,
        precision=cfg.precision, preferred_element_type=acc,
    )
    return y.astype(out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _gemm_conv(x, w, cfg: _Cfg, passes: tuple[str, str, str]):
    return _forward(x, w, cfg, passes[0])


def _forward(x, w, cfg: _Cfg, impl: str):
    if impl == "winograd":
        return _winograd_forward(x, w, cfg)
    return _xla_conv(x, w, cfg) if impl == "xla" else _gemm_forward(x, w, cfg)


def _winograd_forward(x, w, cfg: _Cfg):
    """F(2×2, 3×3) on the padded input, in batch chunks."""
    acc, out = _accumulation(x, w, cfg)
    out_size = _out_spatial(x.shape[1:-1], cfg)
    chunk = _batch_chunk(x.shape, x.dtype.itemsize, cfg)
    y = _map_chunks(lambda xc: winograd.forward(_padded(xc, cfg), w, out_size, acc), chunk, x)
    return y.astype(out)


def _winograd_kernel_grad(x, dy, cfg: _Cfg):
    """Σ over batch chunks of F(2×2, 3×3)'s kernel gradient."""
    acc, _ = _accumulation(x, dy, cfg)
    chunk = _batch_chunk(x.shape, x.dtype.itemsize, cfg)
    return _sum_over_chunks(lambda xc, dyc: winograd.kernel_grad(_padded(xc, cfg), dyc, acc),
                            chunk, x, dy)


def _gemm_conv_fwd(x, w, cfg: _Cfg, passes):
    return _forward(x, w, cfg, passes[0]), (x, w)


def _gemm_conv_bwd(cfg: _Cfg, passes, res, dy):
    x, w = res
    # cotangents come back in the primal dtypes
    bcfg = cfg._replace(preferred_element_type=None)
    dy = dy.astype(jnp.result_type(x.dtype, w.dtype))
    _, dx_impl, dw_impl = passes
    if dx_impl == "xla":
        (dx,) = jax.vjp(lambda v: _xla_conv(v, w, bcfg), x)[1](dy)
    elif dx_impl == "winograd":
        dx = _winograd_forward(dy.astype(w.dtype), _transposed_kernel(w, bcfg), _transposed_cfg(bcfg))
    else:
        dx = _gemm_input_grad(x.shape, x.dtype, w, dy, bcfg)
    if dw_impl == "xla":
        (dw,) = jax.vjp(lambda v: _xla_conv(x, v, bcfg), w)[1](dy)
    elif dw_impl == "winograd":
        dw = _winograd_kernel_grad(x, dy, bcfg)
    else:
        dw = _gemm_kernel_grad(x, dy, w.shape, bcfg)
    return dx.astype(x.dtype), dw.astype(w.dtype)


_gemm_conv.defvjp(_gemm_conv_fwd, _gemm_conv_bwd)


def _conv_by_passes(
    passes: tuple[str, str, str] | str,
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count: int = 1,
    batch_group_count: int = 1,
    precision=None,
    preferred_element_type=None,
    out_sharding=None,
):
    """`lax.conv_general_dilated` whose (forward, input gradient, kernel gradient) are each
    computed by "gemm" or "xla" as `passes` says ("auto-cpu": `_auto_cpu_passes` decides)."""
    nsp = lhs.ndim - 2
    lhs_dilation = tuple(lhs_dilation) if lhs_dilation is not None else (1,) * nsp
    rhs_dilation = tuple(rhs_dilation) if rhs_dilation is not None else (1,) * nsp
    if (
        batch_group_count != 1
        or out_sharding is not None
        or (isinstance(padding, str) and any(d != 1 for d in lhs_dilation))
    ):
        # Rare forms (and the errors lax raises for invalid ones) are left to XLA.
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type,
            **({"out_sharding": out_sharding} if out_sharding is not None else {}),
        )
    dn = lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    lhs_spec, rhs_spec, out_spec = dn
    # canonical layouts: x (N, *S, C), w (*K, I, O), y (N, *S, O)
    x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
    w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
    kernel = tuple(w.shape[:-2])
    strides = tuple(window_strides) if window_strides is not None else (1,) * nsp
    if isinstance(padding, str):
        eff = [(k - 1) * r + 1 for k, r in zip(kernel, rhs_dilation)]
        pads = tuple(lax.padtype_to_pads(x.shape[1:-1], eff, strides, padding))
    else:
        pads = tuple((int(lo), int(hi)) for lo, hi in padding)
    g = int(feature_group_count)
    c, o = x.shape[-1], w.shape[-1]
    if c % g or o % g or w.shape[-2] * g != c:
        raise ValueError(
            f"conv: feature_group_count {g} does not divide input features {c} / output features "
            f"{o}, or kernel in-features {w.shape[-2]} != {c} / {g}"
        )
    if preferred_element_type is not None:
        preferred_element_type = jnp.dtype(preferred_element_type)
    cfg = _Cfg(
        kernel, strides, pads, lhs_dilation, rhs_dilation, g,
        tuple(precision) if isinstance(precision, list) else precision, preferred_element_type,
    )
    out_spatial = _out_spatial(x.shape[1:-1], cfg)
    if passes in ("onednn", "auto-cpu") and _onednn_computes(x, w, cfg, out_spatial, passes):
        y = onednn_conv.convolve(x, w, onednn_conv.Geometry(strides, pads, rhs_dilation, g))
    else:
        if passes == "auto-cpu":
            passes = _auto_cpu_passes(cfg, c, o, out_spatial)
        elif isinstance(passes, str):
            passes = ("gemm" if passes == "onednn" else passes,) * 3
        if not winograd.applies(kernel, strides, lhs_dilation, rhs_dilation, g):
            passes = tuple("gemm" if p == "winograd" else p for p in passes)
        if g > 1 and w.shape[-2] == 1 and passes != ("xla",) * 3:
            y = _depthwise(x, w, cfg)
        else:
            y = _gemm_conv(x, w, cfg, passes) if _USE_CUSTOM_VJP else _gemm_forward(x, w, cfg)
    # canonical axis j of y goes to output axis out_spec[...]
    canon_to_out = [out_spec[0], *out_spec[2:], out_spec[1]]
    perm = [0] * y.ndim
    for canon, axis in enumerate(canon_to_out):
        perm[axis] = canon
    return jnp.transpose(y, perm)


def conv_general_dilated_winograd(lhs, rhs, *args, **kwargs):
    """Winograd F(2×2, 3×3) for every pass of stride-1 3×3 convolutions, "gemm" for the others."""
    return _conv_by_passes("winograd", lhs, rhs, *args, **kwargs)


def conv_general_dilated_onednn(lhs, rhs, *args, **kwargs):
    """2-D float32 convolutions through oneDNN on the CPU (`visionax.layers.onednn_conv`), "gemm"
    for the forms it does not cover; XLA's elsewhere than on the CPU."""
    if jax.default_backend() == "cpu":
        return _conv_by_passes("onednn", lhs, rhs, *args, **kwargs)
    return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


def conv_general_dilated_gemm(lhs, rhs, *args, **kwargs):
    """`lax.conv_general_dilated` computed as patches + matrix products (see module docstring)."""
    return _conv_by_passes(("gemm", "gemm", "gemm"), lhs, rhs, *args, **kwargs)


def _auto_cpu_passes(
    cfg: _Cfg, c: int, o: int, out_spatial: tuple[int, ...]
) -> tuple[str, str, str]:
    """The fastest (forward, input gradient, kernel gradient) on the CPU for this convolution,
    whose output maps are `out_spatial`.

    Measured with bench/conv_micro.py on the ResNet-18 layers (2-core AVX-512 Xeon, batch 128
    and 512): XLA's forward convolution, and the stride-1 input gradient (itself a forward
    convolution), run near the matmul peak when both sides have >= 128 features per group, the
    kernel is larger than 1x1 and the maps are at least 8x8 (on 4x4 maps they are 14 % slower
    than gemm, on 2x2 maps 7x slower: XLA then mostly multiplies padding); with 64 features, a
    stride or a 1x1 kernel, patches + dot are faster. XLA's kernel gradient is 1.1-3x slower than
    the gemm one for every layer, so that is always gemm.
    """
    wide = (
        min(c, o) // cfg.groups >= _AUTO_XLA_MIN_FEATURES
        and min(out_spatial, default=0) >= _AUTO_XLA_MIN_SIDE
        and math.prod(cfg.kernel) > 1
        and all(s == 1 for s in cfg.strides)
        and all(d == 1 for d in cfg.lhs_dilation)
    )
    return ("xla", "xla", "gemm") if wide else ("gemm", "gemm", "gemm")


def _onednn_computes(x, w, cfg: _Cfg, out_spatial: tuple[int, ...], passes: str) -> bool:
    """Whether oneDNN computes this convolution (canonical x, w): for "onednn" wherever it applies
    (and a UserError if the library cannot be built here), for "auto-cpu" where it applies and
    the library is available."""
    if not (onednn_conv.applies(x, w, cfg.pads, cfg.lhs_dilation, cfg.preferred_element_type)
            and x.shape[0] > 0 and min(out_spatial, default=0) > 0):
        return False
    if passes == "onednn":
        onednn_conv.load()
        return True
    return _AUTO_ONEDNN and onednn_conv.available()


def conv_general_dilated_auto(lhs, rhs, *args, **kwargs):
    """On the CPU backend oneDNN where it applies and can be built, else the fastest pass of each
    kind (`_auto_cpu_passes`); elsewhere XLA's."""
    if jax.default_backend() == "cpu":
        return _conv_by_passes("auto-cpu", lhs, rhs, *args, **kwargs)
    return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


_IMPLS = {
    "xla": lax.conv_general_dilated,
    "gemm": conv_general_dilated_gemm,
    "winograd": conv_general_dilated_winograd,
    "onednn": conv_general_dilated_onednn,
    "auto": conv_general_dilated_auto,
}


def conv_general_dilated_for(impl: str):
    """The function with `lax.conv_general_dilated`'s signature that implements `impl`."""
    if impl not in CONV_IMPLS:
        raise UserError(f"unknown conv_impl {impl!r}; choose one of {', '.join(CONV_IMPLS)}")
    return _IMPLS[impl]


def conv_module(impl: str = "xla"):
    """`nn.Conv` whose convolution is computed by `impl` ("xla", "gemm", "winograd" or "auto")."""
    return functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated_for(impl))
