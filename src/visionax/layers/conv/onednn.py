"""2-D float32 convolutions on the CPU through oneDNN, the kernel library of PyTorch's CPU
convolutions, called from XLA as typed FFI custom calls (`onednn.cc`, built and loaded by
`visionax.layers.conv.onednn_build`).

`convolve(x, w, geometry)` computes y[n, i, j, o] = Σ_{a, b, c} x_pad[n, i·s₀ + a·d₀, j·s₁ + b·d₁,
g(o)·C_g + c] · w[a, b, c, o] for x `[batch, height, width, in_features]` and w `[kernel_h,
kernel_w, in_features / groups, out_features]`; its gradients are oneDNN's backward-data and
backward-weights primitives (a `jax.custom_vjp`). `visionax.layers.conv.dispatch` routes
`conv_impl="onednn"` (and `"auto"` on the CPU) here for the convolutions this covers (`applies`).
Under `jax.shard_map` with `check_vma=True` results are typed varying like their operands and a
replicated operand's gradient is summed over the devices, as for XLA's own convolution.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from visionax.layers.conv import onednn_build

__all__ = ["Geometry", "applies", "convolve"]


class Geometry(NamedTuple):
    """Static part of a 2-D convolution: strides, (low, high) zero padding per side (non-negative),
    kernel dilation (1 = none) and feature groups."""

    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int

    def attributes(self) -> dict:
        return {
            "strides": np.asarray(self.strides, np.int64),
            "pad_lo": np.asarray([lo for lo, _ in self.pads], np.int64),
            "pad_hi": np.asarray([hi for _, hi in self.pads], np.int64),
            "dilation": np.asarray(self.dilation, np.int64),
            "groups": np.int64(self.groups),
        }


def applies(x, w, pads, lhs_dilation, preferred_element_type) -> bool:
    """Whether oneDNN computes this convolution: 2-D, float32 in and out, non-negative padding, no
    input dilation (the rest goes to the patch-based paths)."""
    return (
        x.ndim == 4
        and x.dtype == jnp.float32
        and w.dtype == jnp.float32
        and preferred_element_type in (None, jnp.dtype(jnp.float32))
        and all(lo >= 0 and hi >= 0 for lo, hi in pads)
        and all(d == 1 for d in lhs_dilation)
    )


def _varying_axes(array) -> frozenset:
    """The shard_map mesh axes along which `array` differs between devices (empty outside)."""
    axis_type = getattr(jax.typeof(array), "manual_axis_type", None)
    return frozenset(axis_type.varying) if axis_type is not None else frozenset()


def _call(name: str, result_shape: tuple[int, ...], geometry: Geometry, *operands):
    """The FFI call `name` on `operands`. Inside shard_map the operands are first made varying
    over the same mesh axes, and the result is typed as varying over them too (an FFI result
    carries only the type it is given)."""
    onednn_build.load()
    varying = frozenset().union(*map(_varying_axes, operands))
    operands = [jax.lax.pcast(o, tuple(varying - _varying_axes(o)), to="varying")
                if varying - _varying_axes(o) else o for o in operands]
    out = jax.typeof(operands[0]).update(shape=result_shape, dtype=jnp.float32)
    # under vmap one call per example: correct for any batching, if not fast
    call = jax.ffi.ffi_call(onednn_build.TARGET_PREFIX + name, out, vmap_method="sequential")
    return call(*operands, **geometry.attributes())


def _output_shape(x_shape, w_shape, geometry: Geometry) -> tuple[int, ...]:
    """The output shape by lax's own shape rule for the same convolution."""
    convolution = functools.partial(
        jax.lax.conv_general_dilated, window_strides=geometry.strides, padding=geometry.pads,
        rhs_dilation=geometry.dilation, feature_group_count=geometry.groups,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.eval_shape(convolution, jax.ShapeDtypeStruct(x_shape, jnp.float32),
                          jax.ShapeDtypeStruct(w_shape, jnp.float32)).shape


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def convolve(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
    """The convolution `[batch, out_height, out_width, out_features]` of x `[batch, height, width,
    in_features]` with w `[kernel_h, kernel_w, in_features / groups, out_features]` (float32)."""
    return _call("forward", _output_shape(x.shape, w.shape, geometry), geometry, x, w)


def _convolve_forward(x, w, geometry):
    return convolve(x, w, geometry), (x, w)


def _summed_like(cotangent, primal):
    """`cotangent` summed over the shard_map axes along which it varies but `primal` does not (the
    transpose of making `primal` varying, as JAX's own convolution gradient does)."""
    extra = _varying_axes(cotangent) - _varying_axes(primal)
    return jax.lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


def _convolve_backward(geometry, residuals, dy):
    x, w = residuals
    dx = _call("backward_data", x.shape, geometry, dy, w)
    dw = _call("backward_weights", w.shape, geometry, x, dy)
    return _summed_like(dx, x), _summed_like(dw, w)


convolve.defvjp(_convolve_forward, _convolve_backward)
