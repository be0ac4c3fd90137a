"""From `conv_impl` to the kernels: the canonical layout, the routing per implementation, and the
policy of "auto".

`conv_general_dilated_for(impl, tuning)` is a function with `lax.conv_general_dilated`'s signature
(what `nn.Conv` takes as `conv_general_dilated`). Called, it

1. leaves the rare forms (batch groups, an output sharding, a padding string with input dilation,
   and the errors lax raises for invalid ones) to `lax.conv_general_dilated`, as it does every
   "onednn" and "auto" convolution elsewhere than on the CPU backend and every "auto" one on the
   CPU without oneDNN from jax 0.12 on (`ConvTuning.auto_xla_only`: then "auto" is "xla");
2. brings the operands into the canonical layout (`visionax.layers.conv.spec`): x `[batch,
   *spatial, C]`, w `[*kernel, C / groups, O]`, padding as explicit (lo, hi) pairs;
3. routes them: to oneDNN (`visionax.layers.conv.onednn`) where "onednn" or "auto" apply it, else
   to the three passes (forward, input gradient, kernel gradient) that the implementation names
   (`visionax.layers.conv.passes`; "auto": `auto_cpu_passes`), Winograd only where it applies and
   depthwise convolutions through the elementwise path (`visionax.layers.conv.gemm.depthwise`);
4. transposes the result `[batch, *out_spatial, O]` into the layout `dimension_numbers` asks for.

Every choice is made at trace time, from the default backend, the shapes and the `ConvTuning`.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from jax import lax

from visionax import registry
from visionax.errors import UserError
from visionax.layers.conv import gemm, onednn, onednn_build, winograd
from visionax.layers.conv.passes import PASS_IMPLS, convolve, forward
from visionax.layers.conv.spec import ConvSpec
from visionax.layers.conv.tuning import ConvTuning

CONV_IMPLS = ("xla", "gemm", "winograd", "onednn", "auto")


def conv_general_dilated_for(impl: str, tuning: ConvTuning = ConvTuning()):
    """The function with `lax.conv_general_dilated`'s signature that implements `impl`:

    * "xla": `lax.conv_general_dilated` itself (XLA's convolution; the fast one on GPU and TPU);
    * "gemm": patches + matrix products for every pass (`visionax.layers.conv.gemm`);
    * "winograd": F(2×2, 3×3) for every pass of stride-1 3×3 convolutions, "gemm" for the others;
    * "onednn": on the CPU oneDNN's primitives for 2-D float32 convolutions with non-negative
      padding and no input dilation (a one-line UserError where its library cannot be built),
      "gemm" for the other forms; XLA's elsewhere than on the CPU;
    * "auto": on the CPU oneDNN where it applies and can be built (at most one warning where it
      cannot), else XLA's own convolution from jax 0.12 on and before it the fastest pass of each
      kind (`auto_cpu_passes`; `ConvTuning.auto_xla_only`); XLA's elsewhere.

    `tuning` sets how "gemm", "winograd" and "auto" split their work (not the values).
    """
    registry.lookup(dict.fromkeys(CONV_IMPLS), impl, "conv_impl")
    if impl == "xla":
        return lax.conv_general_dilated
    return _Convolution(impl, tuning)


def conv_general_dilated_by_passes(passes: tuple[str, str, str], tuning: ConvTuning = ConvTuning()):
    """`lax.conv_general_dilated` whose (forward, input gradient, kernel gradient) are computed by
    `passes`, each one of "xla", "gemm" or "winograd" (Winograd where it applies, gemm elsewhere),
    e.g. ("xla", "xla", "gemm"), the mix "auto" takes for wide layers without oneDNN."""
    passes = tuple(passes)
    if len(passes) != 3 or not set(passes) <= set(PASS_IMPLS):
        raise UserError(f"passes {passes!r}: three of {', '.join(PASS_IMPLS)} (forward, input "
                        "gradient, kernel gradient)")
    return _Convolution(passes, tuning)


def auto_cpu_passes(
    spec: ConvSpec, in_features: int, out_features: int, out_spatial: tuple[int, ...],
    tuning: ConvTuning,
) -> tuple[str, str, str]:
    """What "auto" computes each pass of a convolution with on the CPU where oneDNN does not:
    XLA's forward convolution and stride-1 input gradient (itself a forward convolution) for
    kernels larger than 1×1, stride 1, with at least `tuning.auto_xla_min_features` features a
    side per group on output maps at least `tuning.auto_xla_min_side` a side; gemm for the others
    and for every kernel gradient (XLA's is 1.1–3× slower than gemm's for every ResNet-18 layer).
    """
    wide = (
        min(in_features, out_features) // spec.groups >= tuning.auto_xla_min_features
        and min(out_spatial, default=0) >= tuning.auto_xla_min_side
        and math.prod(spec.kernel) > 1
        and all(s == 1 for s in spec.strides)
        and all(d == 1 for d in spec.lhs_dilation)
    )
    return ("xla", "xla", "gemm") if wide else ("gemm", "gemm", "gemm")


def _onednn_computes(x, w, spec: ConvSpec, out_spatial, impl: str, tuning: ConvTuning) -> bool:
    """Whether oneDNN computes this convolution (canonical x, w): for "onednn" wherever it applies
    (a UserError if its library cannot be built here), for "auto" where it applies and the
    library is available."""
    if not (onednn.applies(x, w, spec.pads, spec.lhs_dilation, spec.preferred_element_type)
            and x.shape[0] > 0 and min(out_spatial, default=0) > 0):
        return False
    if impl == "onednn":
        onednn_build.load()
        return True
    return tuning.auto_onednn and onednn_build.available()


@dataclasses.dataclass(frozen=True)
class _Convolution:
    """`lax.conv_general_dilated` computed by `impl`: a name of `CONV_IMPLS` other than "xla", or a
    (forward, input gradient, kernel gradient) triple of `PASS_IMPLS`. Compares by value, so that
    two models built with the same options are equal."""

    impl: str | tuple[str, str, str]
    tuning: ConvTuning

    def __call__(
        self, lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
        dimension_numbers=None, feature_group_count: int = 1, batch_group_count: int = 1,
        precision=None, preferred_element_type=None, out_sharding=None,
    ):
        nsp = lhs.ndim - 2
        lhs_dilation = tuple(lhs_dilation) if lhs_dilation is not None else (1,) * nsp
        rhs_dilation = tuple(rhs_dilation) if rhs_dilation is not None else (1,) * nsp
        if (
            (self.impl in ("onednn", "auto") and jax.default_backend() != "cpu")
            or (self.impl == "auto" and self.tuning.xla_only()
                and not (self.tuning.auto_onednn and onednn_build.available()))
            or batch_group_count != 1
            or out_sharding is not None
            or (isinstance(padding, str) and any(d != 1 for d in lhs_dilation))
        ):
            return lax.conv_general_dilated(
                lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                feature_group_count, batch_group_count, precision, preferred_element_type,
                **({"out_sharding": out_sharding} if out_sharding is not None else {}),
            )
        lhs_spec, rhs_spec, out_spec = lax.conv_dimension_numbers(
            lhs.shape, rhs.shape, dimension_numbers)
        x = jnp.transpose(lhs, (lhs_spec[0], *lhs_spec[2:], lhs_spec[1]))
        w = jnp.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))
        spec = _spec(x, w, window_strides, padding, lhs_dilation, rhs_dilation,
                     feature_group_count, precision, preferred_element_type)
        y = self._canonical(x, w, spec)
        # canonical axis j of y goes to output axis out_spec[...]
        canon_to_out = [out_spec[0], *out_spec[2:], out_spec[1]]
        perm = [0] * y.ndim
        for canon, axis in enumerate(canon_to_out):
            perm[axis] = canon
        return jnp.transpose(y, perm)

    def _canonical(self, x, w, spec: ConvSpec):
        """y `[batch, *out_spatial, O]` of canonical x and w, by the kernels `impl` routes to."""
        impl, tuning = self.impl, self.tuning
        out_spatial = spec.out_spatial(x.shape[1:-1])
        if impl in ("onednn", "auto") and _onednn_computes(x, w, spec, out_spatial, impl, tuning):
            geometry = onednn.Geometry(spec.strides, spec.pads, spec.rhs_dilation, spec.groups)
            return onednn.convolve(x, w, geometry)
        if impl == "auto" and tuning.xla_only():
            passes = ("xla",) * 3
        elif impl == "auto":
            passes = auto_cpu_passes(spec, x.shape[-1], w.shape[-1], out_spatial, tuning)
        elif isinstance(impl, str):
            passes = ("gemm" if impl == "onednn" else impl,) * 3
        else:
            passes = impl
        if not winograd.applies(spec.kernel, spec.strides, spec.lhs_dilation, spec.rhs_dilation,
                                spec.groups):
            passes = tuple("gemm" if p == "winograd" else p for p in passes)
        if spec.groups > 1 and w.shape[-2] == 1 and passes != ("xla",) * 3:
            return gemm.depthwise(x, w, spec)
        if not tuning.custom_vjp:
            return forward(x, w, spec, passes[0], tuning)
        return convolve(x, w, spec, passes, tuning)


def _spec(x, w, window_strides, padding, lhs_dilation, rhs_dilation, feature_group_count,
          precision, preferred_element_type) -> ConvSpec:
    """The `ConvSpec` of canonical x `[batch, *spatial, C]` and w `[*kernel, C / groups, O]`, the
    padding string resolved into (lo, hi) pairs; a ValueError for inconsistent feature groups."""
    kernel = tuple(w.shape[:-2])
    nsp = len(kernel)
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
    return ConvSpec(
        kernel, strides, pads, lhs_dilation, rhs_dilation, g,
        tuple(precision) if isinstance(precision, list) else precision, preferred_element_type,
    )
