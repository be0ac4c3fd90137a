"""Convolutions as patch extraction ("im2col") and matrix products, every pass of them.

XLA's CPU convolution, and above all its gradient, is several times slower than its matrix
product; these passes put all the arithmetic into `lax.dot_general`. In the canonical layout
(`visionax.layers.conv.spec`), with P = patches(x) `[M, K, C]` (M = batch · prod(out_spatial) output
positions, K = prod(kernel) taps) and one product per feature group (shown for one group):

* forward: y = P · w, `[M, K·C] × [K·C, O]`;
* kernel gradient: dw = Pᵀ · dy, the patches recomputed from x rather than kept from the forward
  pass; from `ConvTuning.nt_min_features` input features on as `[K·C, M] × [O, M]ᵀ`;
* input gradient, stride 1: the transposed convolution, itself a forward convolution of dy (padded,
  the kernel flipped with its in/out features swapped), so patches + one product whose contraction
  is K·O long;
* input gradient, other strides and input dilation: dP = dy · wᵀ, then the exact transpose of the
  patch extraction (col2im: a sum of shifted, zero-interleaved pads).

Patches are built for batch chunks of about `ConvTuning.chunk_bytes` (`batch_chunk`, `map_chunks`,
`sum_over_chunks`, which the Winograd passes share). Depthwise convolutions (one input feature per
group) are a multiply-accumulate over the taps instead (`depthwise`): a product contracted over K
entries would waste the matmul unit, while the elementwise form fuses into one loop.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
from jax import lax

from visionax.layers.conv.spec import ConvSpec, accumulation, out_size, padded, transposed_kernel
from visionax.layers.conv.tuning import ConvTuning


def taps(x, spec: ConvSpec, channels_first: bool = False) -> list:
    """The strided window slices of the padded input, one per kernel tap (row-major kernel order):
    a list of `[batch, *out_spatial, features]`, or of `[features, batch, *out_spatial]` when
    `channels_first`."""
    xp = padded(x, spec, channels_first)
    spatial = xp.shape[2:] if channels_first else xp.shape[1:-1]
    outs = [
        out_size(s, k, st, r)
        for s, k, st, r in zip(spatial, spec.kernel, spec.strides, spec.rhs_dilation)
    ]
    slices = []
    for offs in itertools.product(*[range(k) for k in spec.kernel]):
        start = [o * r for o, r in zip(offs, spec.rhs_dilation)]
        limit = [b + (m - 1) * st + 1 if m > 0 else b
                 for b, m, st in zip(start, outs, spec.strides)]
        if channels_first:
            c, n = xp.shape[:2]
            slices.append(lax.slice(xp, (0, 0, *start), (c, n, *limit), (1, 1, *spec.strides)))
        else:
            n, c = xp.shape[0], xp.shape[-1]
            slices.append(lax.slice(xp, (0, *start, 0), (n, *limit, c), (1, *spec.strides, 1)))
    return slices


def patches(x, spec: ConvSpec):
    """im2col: `[batch, *spatial, C]` → `[batch, *out_spatial, K, C]`, taps in row-major order."""
    slices = taps(x, spec)
    if len(slices) == 1:
        return slices[0][..., None, :]
    return jnp.stack(slices, axis=-2)


def _dot(a, b, dims, spec: ConvSpec):
    acc, out = accumulation(a, b, spec)
    y = lax.dot_general(a, b, dims, precision=spec.precision, preferred_element_type=acc)
    return y.astype(out)


def batch_chunk(x_shape, itemsize: int, spec: ConvSpec, tuning: ConvTuning) -> int:
    """Examples per chunk so that one chunk's patches take about `tuning.chunk_bytes` (divides the
    batch): patches of the whole batch would make the products memory-bound."""
    n = x_shape[0]
    per_example = (
        math.prod(spec.out_spatial(x_shape[1:-1])) * math.prod(spec.kernel) * x_shape[-1] * itemsize
    )
    if tuning.chunk_bytes <= 0 or per_example * n <= tuning.chunk_bytes:
        return n
    chunk = max(1, tuning.chunk_bytes // max(per_example, 1))
    while n % chunk:
        chunk -= 1
    return chunk


def map_chunks(fn, chunk: int, *arrays):
    """fn applied to batch chunks of `arrays` (leading axis), outputs concatenated (lax.map)."""
    n = arrays[0].shape[0]
    if chunk >= n:
        return fn(*arrays)
    split = tuple(a.reshape(n // chunk, chunk, *a.shape[1:]) for a in arrays)
    out = lax.map(lambda args: fn(*args), split)
    return out.reshape(n, *out.shape[2:])


def sum_over_chunks(fn, chunk: int, x, dy):
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


def forward(x, w, spec: ConvSpec, tuning: ConvTuning):
    """y `[batch, *out_spatial, O]`: patches + one matrix product per group, in batch chunks."""
    chunk = batch_chunk(x.shape, x.dtype.itemsize, spec, tuning)
    return map_chunks(lambda xc: _from_patches(patches(xc, spec), w, spec), chunk, x)


def _from_patches(p, w, spec: ConvSpec):
    """`[..., K, C]` patches times w `[*kernel, C_g, O]` → `[..., O]` (groups batched)."""
    lead = p.shape[:-2]
    m = math.prod(lead)
    k = p.shape[-2]
    c = p.shape[-1]
    o = w.shape[-1]
    g = spec.groups
    if g == 1:
        y = _dot(p.reshape(m, k * c), w.reshape(k * c, o), (((1,), (0,)), ((), ())), spec)
    else:
        cg, og = c // g, o // g
        y = _dot(
            p.reshape(m, k, g, cg),
            w.reshape(k, cg, g, og),
            (((1, 3), (0, 1)), ((2,), (2,))),
            spec,
        )  # (G, M, Og)
        y = jnp.transpose(y, (1, 0, 2)).reshape(m, o)
    return y.reshape(*lead, o)


def kernel_grad(x, dy, w_shape, spec: ConvSpec, tuning: ConvTuning):
    """dw = patchesᵀ · dy (per group) `w_shape`, accumulated over batch chunks."""
    g = spec.groups
    c, o = x.shape[-1], dy.shape[-1]
    cg, og = c // g, o // g
    k = math.prod(spec.kernel)

    def chunk_grad(xc, dyc):
        m = math.prod(dyc.shape[:-1])
        if g == 1 and c >= tuning.nt_min_features:
            # transposed patches (K*C, M) against dy^T (O, M), both contracted on their minor axis
            xt = jnp.moveaxis(xc, -1, 0)
            pt = jnp.stack(taps(xt, spec, channels_first=True), axis=0).reshape(k * c, m)
            dyt = jnp.moveaxis(dyc, -1, 0).reshape(o, m)
            return _dot(pt, dyt, (((1,), (1,)), ((), ())), spec)  # (K*C, O)
        p = patches(xc, spec).reshape(m, k, g, cg)
        d = dyc.reshape(m, o)
        if g == 1:
            return _dot(p.reshape(m, k * c), d, (((0,), (0,)), ((), ())), spec)  # (K*C, O)
        dw = _dot(p, d.reshape(m, g, og), (((0,), (0,)), ((2,), (1,))), spec)  # (G, K, Cg, Og)
        return jnp.transpose(dw, (1, 2, 0, 3))

    chunk = batch_chunk(x.shape, x.dtype.itemsize, spec, tuning)
    return sum_over_chunks(chunk_grad, chunk, x, dy).reshape(w_shape)


def input_grad(x_shape, x_dtype, w, dy, spec: ConvSpec, tuning: ConvTuning):
    """dx `x_shape`: for unit strides a transposed convolution as patches + dot, else dy · wᵀ and
    col2im."""
    g = spec.groups
    c, o = x_shape[-1], w.shape[-1]
    cg, og = c // g, o // g
    k = math.prod(spec.kernel)
    unit = all(s == 1 for s in spec.strides) and all(d == 1 for d in spec.lhs_dilation)
    if unit and k > 1 and not tuning.dx_col2im_always:
        return forward(dy.astype(w.dtype), transposed_kernel(w, spec), spec.transposed(), tuning)

    def chunk_grad(dyc):
        m = math.prod(dyc.shape[:-1])
        d = dyc.reshape(m, o)
        if g == 1:
            dp = _dot(d, w.reshape(k * c, o), (((1,), (1,)), ((), ())), spec)  # (M, K*C)
        else:
            dp = _dot(
                d.reshape(m, g, og), w.reshape(k, cg, g, og), (((2,), (3,)), ((1,), (2,))), spec
            )  # (G, M, K, Cg)
            dp = jnp.transpose(dp, (1, 2, 0, 3))
        dp = dp.reshape(*dyc.shape[:-1], k, c).astype(x_dtype)
        primal = jax.ShapeDtypeStruct((dyc.shape[0], *x_shape[1:]), x_dtype)
        (dxc,) = jax.linear_transpose(lambda v: patches(v, spec), primal)(dp)
        return dxc

    chunk = batch_chunk(x_shape, jnp.dtype(x_dtype).itemsize, spec, tuning)
    return map_chunks(chunk_grad, chunk, dy)


def depthwise(x, w, spec: ConvSpec):
    """One input feature per group: y[..., c·mult + j] = Σ_k tap_k(x)[..., c] · w[k, 0, c·mult + j],
    a multiply-accumulate over the kernel taps (fuses, no patches; JAX's autodiff differentiates
    it)."""
    c = x.shape[-1]
    o = w.shape[-1]
    mult = o // c
    wk = w.reshape(-1, c, mult)  # (K, C, multiplier): output feature g*mult + j uses input g
    acc_dtype = spec.preferred_element_type or jnp.result_type(x.dtype, w.dtype)
    y = None
    for i, t in enumerate(taps(x, spec)):
        term = t.astype(acc_dtype)[..., None] * wk[i].astype(acc_dtype)
        y = term if y is None else y + term
    return y.reshape(*y.shape[:-2], o)
