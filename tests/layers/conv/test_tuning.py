"""Every ConvTuning knob changes which kernels run (checked in the traced program), never the
values and gradients (checked against lax.conv_general_dilated to 1e-5)."""

import dataclasses

import jax
import pytest

from tests.layers.conv.cases import DN, case, check, count, inputs, traced
from visionax.layers.conv import ConvTuning, conv_general_dilated_for, onednn_build


def _nt_products(forward, full):
    """Matrix products contracted on the minor axis of both operands (`[K·C, M] × [O, M]ᵀ`)."""
    return sum(eqn.primitive.name == "dot_general"
               and eqn.params["dimension_numbers"] == (((1,), (1,)), ((), ())) for eqn in full)


def _custom_vjps(forward, full):
    """custom_vjp calls of the forward pass (the vjp inlines them into the full trace)."""
    return sum("custom_vjp" in eqn.primitive.name for eqn in forward)


def _convs(forward, full):
    return count(full, "conv_general_dilated")


def _onednn_calls(forward, full):
    return count(full, "ffi_call")


def _scans(forward, full):
    return count(full, "scan")


MIX = ConvTuning(auto_onednn=False, auto_xla_only=False)  # "auto" without oneDNN before jax 0.12
XLA_FROM_4 = dataclasses.replace(MIX, auto_xla_min_features=4)
# name: (impl, tuning, the tuning it is compared with, case, probe of the traced value and both
# gradients (equations of the forward pass, of all three), its value with `tuning`, with the other)
SETTINGS = {
    "one_example_chunks": ("gemm", ConvTuning(chunk_bytes=1), ConvTuning(), "wide_same_s1",
                           _scans, 3, 0),
    "nt_kernel_grad_from_4_features": ("gemm", ConvTuning(nt_min_features=4), ConvTuning(),
                                       "same_s1", _nt_products, 1, 0),
    "no_nt_kernel_grad": ("gemm", ConvTuning(nt_min_features=10**9), ConvTuning(), "wide_same_s1",
                          _nt_products, 0, 1),
    # dy · wᵀ is contracted on the minor axis of both, the transposed convolution is not
    "col2im_at_stride_1": ("gemm", ConvTuning(dx_col2im_always=True), ConvTuning(),
                           "explicit_pad_3x3_odd", _nt_products, 1, 0),
    "jax_autodiff": ("gemm", ConvTuning(custom_vjp=False), ConvTuning(), "groups2", _custom_vjps,
                     0, 1),
    "winograd_jax_autodiff": ("winograd", ConvTuning(custom_vjp=False), ConvTuning(), "same_s1",
                              _custom_vjps, 0, 1),
    "auto_without_onednn": ("auto", ConvTuning(auto_onednn=False), ConvTuning(), "same_s1",
                            _onednn_calls, 0, None),  # None: 3 where oneDNN is available
    "auto_xla_from_4_features": ("auto", XLA_FROM_4, MIX, "same_s1", _convs, 2, 0),
    # forward, input gradient and kernel gradient all XLA's convolution, differentiated by jax
    # (lax.conv_general_dilated itself, as "xla"), not by the passes' custom_vjp
    "auto_xla_only": ("auto", dataclasses.replace(MIX, auto_xla_only=True), MIX, "same_s1", _convs,
                      3, 0),
    "auto_xla_only_is_lax": ("auto", dataclasses.replace(MIX, auto_xla_only=True), MIX, "same_s1",
                             _custom_vjps, 0, 1),
    "auto_xla_on_small_maps": ("auto", dataclasses.replace(XLA_FROM_4, auto_xla_min_side=5),
                               XLA_FROM_4, "valid_s1", _convs, 2, 0),
    "auto_gemm_below_the_side": ("auto", dataclasses.replace(XLA_FROM_4, auto_xla_min_side=9),
                                 XLA_FROM_4, "same_s1", _convs, 0, 2),
}


@pytest.mark.parametrize("setting", SETTINGS)
def test_tuning_changes_the_kernels_not_the_numbers(setting):
    impl, tuning, other, name, probe, tuned, untuned = SETTINGS[setting]
    _, spatial, kernel, cin, cout, kw = case(name)
    x, w, rng = inputs(11, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    conv = conv_general_dilated_for(impl, tuning)
    check(conv, x, w, rng, dimension_numbers=DN, **kw)
    got = probe(*traced(conv, x, w, dimension_numbers=DN, **kw))
    got_other = probe(*traced(conv_general_dilated_for(impl, other), x, w, dimension_numbers=DN,
                              **kw))
    if untuned is None:
        untuned = 3 * onednn_build.available()
    assert (got, got_other) == (tuned, untuned)


@pytest.mark.parametrize("version,xla_only", [("0.10.2", False), ("0.11.2", False), ("0.12.1", True),
                                              ("0.13.0.dev20261201", True), ("1.0.0", True)])
def test_auto_xla_only_follows_the_jax_version_unless_set(monkeypatch, version, xla_only):
    monkeypatch.setattr(jax, "__version__", version)
    assert ConvTuning().xla_only() is xla_only
    assert ConvTuning(auto_xla_only=not xla_only).xla_only() is (not xla_only)


def test_tuning_is_frozen_and_hashable():
    tuning = ConvTuning()
    with pytest.raises(dataclasses.FrozenInstanceError):
        tuning.chunk_bytes = 0
    assert {tuning: 1}[ConvTuning()] == 1
