"""The dispatch of visionax.layers.conv: every conv_impl through other layouts and ranks, Flax's
nn.Conv and the rare forms equals lax.conv_general_dilated; "auto" picks the measured mix of XLA
and gemm passes on the CPU; "onednn" and "auto" are XLA's on other backends; unknown names are
errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.layers.conv.cases import DN, TOL, check, count, inputs, normal, traced
from visionax.errors import UserError
from visionax.layers.conv import CONV_IMPLS, ConvTuning, conv_general_dilated_for, conv_module
from visionax.layers.conv.dispatch import auto_cpu_passes
from visionax.layers.conv.spec import ConvSpec

WITHOUT_ONEDNN = ConvTuning(auto_onednn=False, auto_xla_only=False)  # the mix before jax 0.12


@pytest.mark.parametrize("impl", ["gemm", "winograd", "auto"])
def test_other_dimension_numbers_and_1d_3d(impl):
    conv = conv_general_dilated_for(impl)
    # NCHW / OIHW (lax's default layout)
    rng = np.random.default_rng(2)
    x = normal(rng, (2, 4, 7, 6))
    w = normal(rng, (6, 2, 3, 2), 0.3)
    check(conv, x, w, rng, window_strides=(2, 1), padding="SAME", feature_group_count=2)
    # 1-D, NWC
    x = normal(rng, (3, 10, 4))
    w = normal(rng, (3, 4, 5), 0.3)
    check(conv, x, w, rng, window_strides=(2,), padding="SAME",
          dimension_numbers=("NWC", "WIO", "NWC"))
    # 3-D, NDHWC with dilation
    x = normal(rng, (2, 5, 6, 5, 3))
    w = normal(rng, (2, 3, 2, 3, 4), 0.3)
    check(conv, x, w, rng, window_strides=(1, 2, 1), padding="VALID",
          rhs_dilation=(2, 1, 1), dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


@pytest.mark.parametrize("cin,cout,stride,side", [
    (4, 6, 1, 8), (128, 128, 1, 8), (128, 130, 2, 8), (128, 128, 1, 2), (256, 256, 1, 1)])
def test_auto_on_cpu_without_onednn_is_the_tuned_mix(cin, cout, stride, side):
    # narrow, wide (XLA forward + input gradient, gemm kernel gradient), strided, and wide layers
    # on maps smaller than 8x8 (gemm); "auto" where oneDNN is not used
    x, w, rng = inputs(2, (side, side), (3, 3), cin, cout, 1)
    x, w = x * 0.25, w * 0.25
    kw = dict(window_strides=(stride, stride), padding="SAME", dimension_numbers=DN)
    assert jax.default_backend() == "cpu"
    conv = conv_general_dilated_for("auto", WITHOUT_ONEDNN)
    check(conv, x, w, rng, **kw)
    wide = min(cin, cout) >= 128 and stride == 1 and side >= 8
    expected = ("xla", "xla", "gemm") if wide else ("gemm",) * 3
    out_side = -(-side // stride)
    spec = ConvSpec((3, 3), (stride,) * 2, ((1, 1),) * 2, (1, 1), (1, 1), 1, None, None)
    assert auto_cpu_passes(spec, cin, cout, (out_side, out_side), ConvTuning()) == expected
    # and that is what runs: XLA's convolution for the forward pass and the input gradient only
    forward, full = traced(conv, x, w, **kw)
    assert (count(forward, "conv_general_dilated"), count(full, "conv_general_dilated")) == (
        (1, 2) if wide else (0, 0))
    assert count(full, "ffi_call") == 0


def _params_like(module, x, rng):
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: normal(rng, s.shape, 0.3), shapes)


@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_flax_conv_module_all_impls(impl):
    rng = np.random.default_rng(4)
    x = normal(rng, (2, 9, 9, 3))
    kwargs = dict(features=6, kernel_size=(3, 3), strides=2, padding="SAME", use_bias=True)
    ref = nn.Conv(**kwargs)
    mod = conv_module(impl)(**kwargs)
    params = _params_like(ref, x, rng)

    @jax.jit
    def run(params, x):
        def loss(m, p, x):
            return jnp.sum(m.apply(p, x) ** 2)

        return (
            (mod.apply(params, x), jax.grad(loss, argnums=(1, 2))(mod, params, x)),
            (ref.apply(params, x), jax.grad(loss, argnums=(1, 2))(ref, params, x)),
        )

    got, want = run(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)
    # depthwise through flax too
    dw = dict(features=3, kernel_size=(3, 3), feature_group_count=3, padding="SAME")
    p = _params_like(nn.Conv(**dw), x, rng)
    np.testing.assert_allclose(
        jax.jit(conv_module(impl)(**dw).apply)(p, x), jax.jit(nn.Conv(**dw).apply)(p, x), **TOL
    )


def test_modules_with_the_same_options_are_equal():
    # equal (and equally hashed) convolutions: two models built alike are one jit cache entry
    tuning = ConvTuning(chunk_bytes=1 << 20)
    assert conv_general_dilated_for("gemm", tuning) == conv_general_dilated_for("gemm", tuning)
    assert hash(conv_general_dilated_for("gemm", tuning)) == hash(
        conv_general_dilated_for("gemm", ConvTuning(chunk_bytes=1 << 20)))
    assert conv_general_dilated_for("gemm") != conv_general_dilated_for("gemm", tuning)
    assert conv_module("auto")(features=2, kernel_size=(3, 3)) == conv_module("auto")(
        features=2, kernel_size=(3, 3))


@pytest.mark.parametrize("impl", ["gemm", "auto"])
def test_batch_groups_are_left_to_lax(impl):
    rng = np.random.default_rng(9)
    x = normal(rng, (4, 6, 6, 3))
    w = normal(rng, (3, 3, 3, 4), 0.3)
    kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN, batch_group_count=2)
    conv = conv_general_dilated_for(impl)
    np.testing.assert_allclose(jax.jit(lambda x, w: conv(x, w, **kw))(x, w),
                               lax.conv_general_dilated(x, w, **kw), **TOL)
    forward, _ = traced(conv, x, w, **kw)
    assert count(forward, "conv_general_dilated") == 1 and count(forward, "dot_general") == 0


def test_inconsistent_feature_groups_are_a_value_error():
    x, w, _ = inputs(0, (6, 6), (3, 3), 4, 6, 1)
    with pytest.raises(ValueError, match="feature_group_count 3"):
        conv_general_dilated_for("gemm")(x, w, (1, 1), "SAME", dimension_numbers=DN,
                                         feature_group_count=3)


@pytest.mark.parametrize("impl", ["onednn", "auto"])
def test_onednn_and_auto_are_xla_on_other_backends(impl, monkeypatch):
    # traced as for a GPU: one XLA convolution, no oneDNN call and no patches
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x, w, _ = inputs(3, (8, 8), (3, 3), 4, 6, 1)
    kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN)
    forward, full = traced(conv_general_dilated_for(impl), x, w, **kw)
    assert count(forward, "conv_general_dilated") == 1 and count(full, "ffi_call") == 0
    assert count(full, "dot_general") == 0


def test_unknown_impl_is_a_user_error():
    with pytest.raises(UserError, match="unknown conv_impl 'cudnn'; choose one of xla, gemm"):
        conv_general_dilated_for("cudnn")
    assert conv_general_dilated_for("xla") is lax.conv_general_dilated
