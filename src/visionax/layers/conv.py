"""Convolution implementations selectable for every Flax convolution in visionax (config `conv_impl`).

Three choices, each a function with `lax.conv_general_dilated`'s signature that `nn.Conv` accepts
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
* ``"auto"`` -- ``"gemm"`` on the CPU backend, ``"xla"`` elsewhere (decided at trace time from the
  default backend).

All three give the same values and gradients (tests/test_conv.py checks them against
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

CONV_IMPLS = ("xla", "gemm", "auto")


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


def _padded(x, cfg: _Cfg):
    """x zero-padded (negative pads crop) and interleaved with zeros for the input dilation."""
    config = [(0, 0, 0)] + [
        (lo, hi, d - 1) for (lo, hi), d in zip(cfg.pads, cfg.lhs_dilation)
    ] + [(0, 0, 0)]
    if all(c == (0, 0, 0) for c in config):
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def _taps(x, cfg: _Cfg):
    """The strided window slices of the padded input, one per kernel tap: list of (N, *O, C)."""
    xp = _padded(x, cfg)
    n, c = xp.shape[0], xp.shape[-1]
    spatial = xp.shape[1:-1]
    outs = [
        _out_size(s, k, st, r)
        for s, k, st, r in zip(spatial, cfg.kernel, cfg.strides, cfg.rhs_dilation)
    ]
    taps = []
    for offs in itertools.product(*[range(k) for k in cfg.kernel]):
        start = [o * r for o, r in zip(offs, cfg.rhs_dilation)]
        limit = [b + (m - 1) * st + 1 if m > 0 else b for b, m, st in zip(start, outs, cfg.strides)]
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


def _dot(a, b, dims, cfg: _Cfg):
    return lax.dot_general(
        a, b, dims, precision=cfg.precision, preferred_element_type=cfg.preferred_element_type
    )


def _gemm_forward(x, w, cfg: _Cfg):
    """Patches + one matrix product per group (batched over groups)."""
    p = _patches(x, cfg)
    lead = p.shape[:-2]
    m = math.prod(lead)
    k = p.shape[-2]
    c = x.shape[-1]
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _gemm_conv(x, w, cfg: _Cfg):
    return _gemm_forward(x, w, cfg)


def _gemm_conv_fwd(x, w, cfg: _Cfg):
    return _gemm_forward(x, w, cfg), (x, w)


def _gemm_conv_bwd(cfg: _Cfg, res, dy):
    x, w = res
    nsp = len(cfg.kernel)
    g = cfg.groups
    c, o = x.shape[-1], w.shape[-1]
    cg, og = c // g, o // g
    k = math.prod(cfg.kernel)
    m = math.prod(dy.shape[:-1])
    dy2 = dy.reshape(m, o)
    # cotangents are produced in the primal dtypes; accumulate in the dot's natural type
    bcfg = cfg._replace(preferred_element_type=None)

    # Kernel gradient: patches^T @ dy, patches recomputed (cheap next to keeping them alive).
    p = _patches(x, cfg).reshape(m, k, g, cg)
    if g == 1:
        dw = _dot(p.reshape(m, k * c), dy2, (((0,), (0,)), ((), ())), bcfg)  # (K*C, O)
    else:
        dw = _dot(p, dy2.reshape(m, g, og), (((0,), (0,)), ((2,), (1,))), bcfg)  # (G,K,Cg,Og)
        dw = jnp.transpose(dw, (1, 2, 0, 3))
    dw = dw.reshape(w.shape).astype(w.dtype)

    # Input gradient.
    unit = all(s == 1 for s in cfg.strides) and all(d == 1 for d in cfg.lhs_dilation)
    if unit and k > 1:
        tcfg = _transposed_cfg(bcfg)
        dx = _gemm_forward(dy.astype(w.dtype), _transposed_kernel(w, cfg), tcfg)
    else:
        if g == 1:
            dp = _dot(dy2, w.reshape(k * c, o), (((1,), (1,)), ((), ())), bcfg)  # (M, K*C)
        else:
            dp = _dot(
                dy2.reshape(m, g, og), w.reshape(k, cg, g, og), (((2,), (3,)), ((1,), (2,))), bcfg
            )  # (G, M, K, Cg)
            dp = jnp.transpose(dp, (1, 2, 0, 3))
        dp = dp.reshape(*dy.shape[:-1], k, c).astype(x.dtype)
        (dx,) = jax.linear_transpose(lambda v: _patches(v, cfg), x)(dp)
    del nsp
    return dx.astype(x.dtype), dw


_gemm_conv.defvjp(_gemm_conv_fwd, _gemm_conv_bwd)


def conv_general_dilated_gemm(
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
    """`lax.conv_general_dilated` computed as patches + matrix products (see module docstring)."""
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
    if g > 1 and w.shape[-2] == 1:
        y = _depthwise(x, w, cfg)
    else:
        y = _gemm_conv(x, w, cfg)
    # canonical axis j of y goes to output axis out_spec[...]
    canon_to_out = [out_spec[0], *out_spec[2:], out_spec[1]]
    perm = [0] * y.ndim
    for canon, axis in enumerate(canon_to_out):
        perm[axis] = canon
    return jnp.transpose(y, perm)


def conv_general_dilated_auto(lhs, rhs, *args, **kwargs):
    """``"gemm"`` on the CPU backend (XLA's CPU convolution gradient is slow), else XLA's."""
    if jax.default_backend() == "cpu":
        return conv_general_dilated_gemm(lhs, rhs, *args, **kwargs)
    return lax.conv_general_dilated(lhs, rhs, *args, **kwargs)


_IMPLS = {
    "xla": lax.conv_general_dilated,
    "gemm": conv_general_dilated_gemm,
    "auto": conv_general_dilated_auto,
}


def conv_general_dilated_for(impl: str):
    """The function with `lax.conv_general_dilated`'s signature that implements `impl`."""
    if impl not in CONV_IMPLS:
        raise UserError(f"unknown conv_impl {impl!r}; choose one of {', '.join(CONV_IMPLS)}")
    return _IMPLS[impl]


def conv_module(impl: str = "xla"):
    """`nn.Conv` whose convolution is computed by `impl` ("xla", "gemm" or "auto")."""
    return functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated_for(impl))
