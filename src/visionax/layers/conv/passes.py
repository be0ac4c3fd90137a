"""One convolution whose three passes are each computed by an implementation of its own.

A training step computes, for y = conv(x, w), the forward pass, the input gradient dx = ∂L/∂x and
the kernel gradient dw = ∂L/∂w. `convolve(x, w, spec, passes, tuning)` computes them, in the
canonical layout (`visionax.layers.conv.spec`), with `passes` = (forward, input gradient, kernel
gradient), each one of `PASS_IMPLS`:

* "xla": `lax.conv_general_dilated` (its input and kernel gradients through `jax.vjp`);
* "gemm": patches + matrix products (`visionax.layers.conv.gemm`);
* "winograd": F(2×2, 3×3) (`visionax.layers.conv.winograd`; the caller checks that it applies).

The backward pass is a `jax.custom_vjp` that keeps only x and w for it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from visionax.layers.conv import gemm, winograd
from visionax.layers.conv.spec import ConvSpec, accumulation
from visionax.layers.conv.tuning import ConvTuning

PASS_IMPLS = ("xla", "gemm", "winograd")


def xla_conv(x, w, spec: ConvSpec):
    """`lax.conv_general_dilated` in the canonical layout (16-bit inputs accumulated in float32)."""
    nsp = len(spec.kernel)
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
    acc, out = accumulation(x, w, spec)
    y = lax.conv_general_dilated(
        x, w, spec.strides, spec.pads, spec.lhs_dilation, spec.rhs_dilation, dn, spec.groups,
        precision=spec.precision, preferred_element_type=acc,
    )
    return y.astype(out)


def forward(x, w, spec: ConvSpec, impl: str, tuning: ConvTuning):
    """y `[batch, *out_spatial, O]` computed by `impl`, one of `PASS_IMPLS`."""
    if impl == "winograd":
        return winograd.forward(x, w, spec, tuning)
    return xla_conv(x, w, spec) if impl == "xla" else gemm.forward(x, w, spec, tuning)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def convolve(x, w, spec: ConvSpec, passes: tuple[str, str, str], tuning: ConvTuning):
    """y `[batch, *out_spatial, O]` of x `[batch, *spatial, C]` and w `[*kernel, C / groups, O]`,
    its (forward, input gradient, kernel gradient) computed by `passes`."""
    return forward(x, w, spec, passes[0], tuning)


def _convolve_forward(x, w, spec: ConvSpec, passes, tuning: ConvTuning):
    return forward(x, w, spec, passes[0], tuning), (x, w)


def _convolve_backward(spec: ConvSpec, passes, tuning: ConvTuning, residuals, dy):
    x, w = residuals
    # cotangents come back in the primal dtypes
    bspec = spec._replace(preferred_element_type=None)
    dy = dy.astype(jnp.result_type(x.dtype, w.dtype))
    _, dx_impl, dw_impl = passes
    if dx_impl == "xla":
        (dx,) = jax.vjp(lambda v: xla_conv(v, w, bspec), x)[1](dy)
    elif dx_impl == "winograd":
        dx = winograd.input_grad(dy, w, bspec, tuning)
    else:
        dx = gemm.input_grad(x.shape, x.dtype, w, dy, bspec, tuning)
    if dw_impl == "xla":
        (dw,) = jax.vjp(lambda v: xla_conv(x, v, bspec), w)[1](dy)
    elif dw_impl == "winograd":
        dw = winograd.kernel_grad(x, dy, bspec, tuning)
    else:
        dw = gemm.kernel_grad(x, dy, w.shape, bspec, tuning)
    return dx.astype(x.dtype), dw.astype(w.dtype)


convolve.defvjp(_convolve_forward, _convolve_backward)
