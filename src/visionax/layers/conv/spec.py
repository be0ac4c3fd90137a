"""One convolution described statically, in the canonical layout every implementation computes in.

Canonical layout: the input x `[batch, *spatial, in_features]`, the kernel w `[*kernel,
in_features / groups, out_features]`, the output y `[batch, *out_spatial, out_features]`, with

    y[n, i, o] = Σ_{k, c} x_pad[n, i·s + k·r, g(o)·C_g + c] · w[k, c, o]

(i, k, s, r vectors over the spatial axes: output position, kernel tap, stride, kernel dilation;
x_pad the input interleaved with d − 1 zeros for the input dilation d and padded (lo, hi) per axis;
C_g = in_features / groups, g(o) the group of output feature o). `visionax.layers.conv.dispatch`
brings every other layout into this one.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import lax


class ConvSpec(NamedTuple):
    """The static part of one convolution in the canonical layout."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    lhs_dilation: tuple[int, ...]
    rhs_dilation: tuple[int, ...]
    groups: int
    precision: object
    preferred_element_type: object

    def out_spatial(self, spatial) -> tuple[int, ...]:
        """Output sizes for input sizes `spatial`: ⌊(padded − effective kernel) / stride⌋ + 1 per
        axis (0 where the kernel does not fit), padded = (size − 1)·d + 1 + lo + hi."""
        return tuple(
            out_size((s - 1) * d + 1 + lo + hi if s > 0 else lo + hi, k, st, r)
            for s, (lo, hi), d, k, st, r in zip(
                spatial, self.pads, self.lhs_dilation, self.kernel, self.strides, self.rhs_dilation
            )
        )

    def transposed(self) -> ConvSpec:
        """The stride-1 input gradient as a forward convolution of dy (with `transposed_kernel`):
        pads (k − 1)·r − lo and (k − 1)·r − hi."""
        pads = tuple(
            ((k - 1) * r - lo, (k - 1) * r - hi)
            for (lo, hi), k, r in zip(self.pads, self.kernel, self.rhs_dilation)
        )
        return self._replace(pads=pads)


def out_size(size: int, k: int, stride: int, rdil: int) -> int:
    """Outputs of a `k`-tap kernel with dilation `rdil` and `stride` over `size` padded entries."""
    eff = (k - 1) * rdil + 1
    return max(0, (size - eff) // stride + 1) if size >= eff else 0


def transposed_kernel(w, spec: ConvSpec):
    """`[*kernel, C_g, G·O_g]` → flipped `[*kernel, O_g, G·C_g]`, so that the stride-1 input
    gradient is dx = conv(dy, it) with `spec.transposed()` and the same G groups."""
    nk = len(spec.kernel)
    g = spec.groups
    cg, o = w.shape[-2], w.shape[-1]
    og = o // g
    wt = w.reshape(*spec.kernel, cg, g, og)
    wt = jnp.transpose(wt, (*range(nk), nk + 2, nk + 1, nk))  # (*K, Og, G, Cg)
    wt = wt.reshape(*spec.kernel, og, g * cg)
    return lax.rev(wt, tuple(range(nk)))


def padded(x, spec: ConvSpec, channels_first: bool = False):
    """x zero-padded (negative pads crop) and interleaved with zeros for the input dilation.

    Layout `[batch, *spatial, features]`, or `[features, batch, *spatial]` when `channels_first`."""
    spatial = [(lo, hi, d - 1) for (lo, hi), d in zip(spec.pads, spec.lhs_dilation)]
    config = [(0, 0, 0)] * 2 + spatial if channels_first else [(0, 0, 0)] + spatial + [(0, 0, 0)]
    if all(c == (0, 0, 0) for c in config):
        return x
    return lax.pad(x, jnp.zeros((), x.dtype), config)


def accumulation(a, b, spec: ConvSpec):
    """(dtype the product is accumulated in, dtype it is returned in).

    16-bit floats are accumulated in float32 and rounded once at the end: more accurate than a
    16-bit result type, and on CPUs with AMX/AVX512-BF16 XLA's dot is several times faster with
    a float32 accumulator than without (bf16 x bf16 -> f32 runs on the matrix unit)."""
    if spec.preferred_element_type is not None:
        return spec.preferred_element_type, spec.preferred_element_type
    out = jnp.result_type(a.dtype, b.dtype)
    if jnp.issubdtype(out, jnp.floating) and jnp.finfo(out).bits < 32:
        return jnp.dtype(jnp.float32), out
    return None, out
