"""Winograd's minimal filtering F(2×2, 3×3) for stride-1 3×3 convolutions (Lavin & Gray 2016).

Each 2×2 output tile of y = x ⋆ g is Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A, d the 4×4 input tile around it:
over the channels the ⊙ becomes 16 independent matrix products `[tiles, C] × [C, O]`, 16 multiplies
per 2×2 outputs where the direct (and im2col) form needs 36 — 2.25× fewer FLOPs, paid for with the
tile transforms, which are additions only and fuse into one memory pass each.

The three passes of a training step in the canonical layout (`visionax.layers.conv.spec`), each in
batch chunks that keep the transformed tiles in cache (`visionax.layers.conv.gemm.batch_chunk`):

* `forward`: V = Bᵀ d B of every tile, M[t] = V[t] · U[t] for the 16 positions t, Y = Aᵀ M A
  (`correlate`, on the padded input);
* `input_grad`: the stride-1 transposed convolution, itself a 3×3 convolution of the padded output
  gradient with the flipped kernel, so the forward again;
* `kernel_grad`: by linearity dU[t] = V[t]ᵀ · (A dY Aᵀ)[t] summed over tiles, then dg = Gᵀ dU G
  (`correlate_kernel_grad`).

Only valid for 2-D, 3×3, stride 1, no dilation, one feature group (`applies`); measured, it wins
13 % on 64-feature 32×32 layers and loses elsewhere, so conv_impl="auto" does not pick it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax import lax

from visionax.layers.conv.gemm import batch_chunk, map_chunks, sum_over_chunks
from visionax.layers.conv.spec import ConvSpec, accumulation, padded, transposed_kernel
from visionax.layers.conv.tuning import ConvTuning

# F(2×2, 3×3) transforms: input Bᵀ (4×4), kernel G (4×3), output Aᵀ (2×4).
INPUT_TRANSFORM = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float32)
KERNEL_TRANSFORM = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)
OUTPUT_TRANSFORM = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float32)


def applies(kernel, strides, lhs_dilation, rhs_dilation, groups: int) -> bool:
    """Whether F(2×2, 3×3) computes this convolution: 2-D 3×3, unit strides and dilations, one group."""
    return (
        tuple(kernel) == (3, 3)
        and all(s == 1 for s in strides)
        and all(d == 1 for d in (*lhs_dilation, *rhs_dilation))
        and groups == 1
    )


def _combine(matrix: np.ndarray, parts: list) -> list:
    """[Σ_i matrix[a, i] · parts[i] for each row a], written as adds and subtracts (entries 0, ±1, ±½)."""
    rows = []
    for coefficients in matrix:
        total = None
        for coefficient, part in zip(coefficients, parts):
            if coefficient == 0:
                continue
            term = part if coefficient == 1 else -part if coefficient == -1 else coefficient * part
            total = term if total is None else total + term
        rows.append(total)
    return rows


def _tile_count(size: int) -> int:
    """2×2 output tiles along an axis whose valid 3-tap output has `size - 2` entries."""
    return (size - 2 + 1) // 2


def _input_tiles(x, axes: tuple[int, int]):
    """Bᵀ d B of every 4×4 tile (stride 2) of `x` (already padded): 16 arrays, tile axes in `axes`."""
    h_axis, w_axis = axes
    tiles_h, tiles_w = _tile_count(x.shape[h_axis]), _tile_count(x.shape[w_axis])
    # one more row/column of zeros when the output size is odd, so that every tile is whole
    extra = [(0, 0)] * x.ndim
    extra[h_axis] = (0, 2 * tiles_h + 2 - x.shape[h_axis])
    extra[w_axis] = (0, 2 * tiles_w + 2 - x.shape[w_axis])
    x = jnp.pad(x, extra)
    by_rows = _combine(INPUT_TRANSFORM, [_every_other(x, h_axis, i, tiles_h) for i in range(4)])
    return [tile for row in by_rows
            for tile in _combine(INPUT_TRANSFORM, [_every_other(row, w_axis, j, tiles_w) for j in range(4)])]


def _every_other(x, axis: int, offset: int, count: int):
    """`count` entries of `x` along `axis` from `offset` on, at stride 2."""
    return lax.slice_in_dim(x, offset, offset + 2 * count - 1, stride=2, axis=axis)


def transformed_kernel(w):
    """U = G g Gᵀ: `[3, 3, C, O]` → `[16, C, O]`."""
    g = jnp.asarray(KERNEL_TRANSFORM, w.dtype)
    return jnp.einsum("ai,ijco,bj->abco", g, w, g).reshape(16, *w.shape[2:])


def correlate(x, w, out_size: tuple[int, int], accumulate=None):
    """Valid 3×3 correlation of padded `x` `[N, H, W, C]` with `w` `[3, 3, C, O]`, cropped to
    `out_size` (H − 2, W − 2 at most): `[N, *out_size, O]`."""
    n, channels, features = x.shape[0], x.shape[-1], w.shape[-1]
    tiles = jnp.stack(_input_tiles(x, (1, 2)))  # [16, N, Th, Tw, C]
    tiles_h, tiles_w = tiles.shape[2:4]
    products = lax.dot_general(
        tiles.reshape(16, -1, channels), transformed_kernel(w).astype(x.dtype),
        (((2,), (1,)), ((0,), (0,))), preferred_element_type=accumulate,
    ).reshape(4, 4, n, tiles_h, tiles_w, features)
    by_rows = _combine(OUTPUT_TRANSFORM, list(products))
    outputs = [_combine(OUTPUT_TRANSFORM, [row[b] for b in range(4)]) for row in by_rows]
    y = jnp.stack([jnp.stack(row, axis=3) for row in outputs], axis=2)  # [N, Th, 2, Tw, 2, O]
    y = y.reshape(n, 2 * tiles_h, 2 * tiles_w, features)
    return y[:, : out_size[0], : out_size[1]]


def correlate_kernel_grad(x, dy, accumulate=None):
    """dL/dw `[3, 3, C, O]` of `correlate(x, w, dy.shape[1:3])` given dL/dy `[N, Ho, Wo, O]`:
    Σ_tiles (Bᵀ d B)ᵀ (A dY Aᵀ), contracted over tiles as `[C, tiles] · [O, tiles]ᵀ`."""
    channels, features = x.shape[-1], dy.shape[-1]
    # channels-first, so both operands of the product are contracted on their minor axis
    tiles = jnp.stack(_input_tiles(jnp.moveaxis(x, -1, 0), (2, 3)))  # [16, C, N, Th, Tw]
    tiles_h, tiles_w = tiles.shape[3:5]
    dy = jnp.moveaxis(dy, -1, 0)  # [O, N, Ho, Wo]
    dy = jnp.pad(dy, [(0, 0), (0, 0), (0, 2 * tiles_h - dy.shape[2]), (0, 2 * tiles_w - dy.shape[3])])
    parts = [[dy[:, :, u::2, v::2] for v in range(2)] for u in range(2)]
    spread = OUTPUT_TRANSFORM.T  # A: dM = A dY Aᵀ
    by_rows = _combine(spread, [jnp.stack(parts[u]) for u in range(2)])  # 4 × [2, O, N, Th, Tw]
    grads = jnp.stack([g for row in by_rows for g in _combine(spread, list(row))])  # [16, O, N, Th, Tw]
    du = lax.dot_general(
        tiles.reshape(16, channels, -1), grads.reshape(16, features, -1).astype(tiles.dtype),
        (((2,), (2,)), ((0,), (0,))), preferred_element_type=accumulate,
    )  # [16, C, O]
    g = jnp.asarray(KERNEL_TRANSFORM, du.dtype)
    return jnp.einsum("ai,abco,bj->ijco", g, du.reshape(4, 4, channels, features), g)


def forward(x, w, spec: ConvSpec, tuning: ConvTuning):
    """y `[batch, *out_spatial, O]` of x `[batch, H, W, C]` and w `[3, 3, C, O]`: F(2×2, 3×3) on the
    padded input, in batch chunks."""
    acc, out = accumulation(x, w, spec)
    out_size = spec.out_spatial(x.shape[1:-1])
    chunk = batch_chunk(x.shape, x.dtype.itemsize, spec, tuning)
    y = map_chunks(lambda xc: correlate(padded(xc, spec), w, out_size, acc), chunk, x)
    return y.astype(out)


def input_grad(dy, w, spec: ConvSpec, tuning: ConvTuning):
    """dx: the transposed convolution of dy `[batch, *out_spatial, O]`, by `forward`."""
    return forward(dy.astype(w.dtype), transposed_kernel(w, spec), spec.transposed(), tuning)


def kernel_grad(x, dy, spec: ConvSpec, tuning: ConvTuning):
    """dw `[3, 3, C, O]`: Σ over batch chunks of `correlate_kernel_grad`."""
    acc, _ = accumulation(x, dy, spec)
    chunk = batch_chunk(x.shape, x.dtype.itemsize, spec, tuning)
    return sum_over_chunks(lambda xc, dyc: correlate_kernel_grad(padded(xc, spec), dyc, acc),
                           chunk, x, dy)
