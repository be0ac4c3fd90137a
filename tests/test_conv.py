"""conv_impl "gemm"/"winograd"/"onednn"/"auto" equal lax.conv_general_dilated (values and gradients)
within 1e-5 (tests/test_onednn_conv.py checks "onednn" over every case)."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from visionax.errors import UserError
from visionax.layers import conv as convmod
from visionax.layers import winograd
from visionax.layers.conv import (
    CONV_IMPLS,
    conv_general_dilated_for,
    conv_general_dilated_gemm,
    conv_module,
)

TOL = dict(rtol=1e-5, atol=1e-5)

# (name, input spatial, kernel spatial, in feats, out feats, kwargs for conv_general_dilated)
CASES = [
    ("same_s1", (8, 8), (3, 3), 4, 6, dict(window_strides=(1, 1), padding="SAME")),
    ("valid_s1", (7, 8), (3, 3), 4, 5, dict(window_strides=(1, 1), padding="VALID")),
    ("same_s2", (8, 8), (3, 3), 3, 4, dict(window_strides=(2, 2), padding="SAME")),
    ("same_s2_odd", (7, 9), (3, 3), 3, 4, dict(window_strides=(2, 2), padding="SAME")),
    ("valid_s2_even_k", (9, 8), (4, 2), 3, 4, dict(window_strides=(2, 3), padding="VALID")),
    ("explicit_pad", (6, 7), (3, 2), 3, 4,
     dict(window_strides=(1, 1), padding=((2, 0), (1, 3)))),
    ("explicit_pad_s2", (7, 7), (3, 3), 2, 4,
     dict(window_strides=(2, 1), padding=((1, 2), (0, 1)))),
    ("explicit_pad_3x3_odd", (7, 9), (3, 3), 4, 5,
     dict(window_strides=(1, 1), padding=((2, 0), (1, 3)))),
    ("negative_pad", (8, 8), (3, 3), 2, 3,
     dict(window_strides=(1, 1), padding=((-1, 1), (1, -2)))),
    ("one_by_one_s2", (8, 8), (1, 1), 5, 7, dict(window_strides=(2, 2), padding="VALID")),
    ("one_by_one_s1", (5, 6), (1, 1), 5, 7, dict(window_strides=(1, 1), padding="SAME")),
    ("stem_7x7_s2", (12, 12), (7, 7), 3, 4, dict(window_strides=(2, 2), padding=((3, 3), (3, 3)))),
    ("rhs_dilation", (9, 9), (3, 3), 3, 4,
     dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 3))),
    ("rhs_dilation_s2", (11, 10), (3, 2), 3, 4,
     dict(window_strides=(2, 2), padding="VALID", rhs_dilation=(2, 2))),
    ("lhs_dilation", (5, 6), (3, 3), 3, 4,
     dict(window_strides=(1, 1), padding=((2, 2), (1, 2)), lhs_dilation=(2, 2))),
    ("lhs_dilation_s2", (5, 5), (3, 3), 3, 4,
     dict(window_strides=(2, 1), padding=((1, 1), (2, 0)), lhs_dilation=(2, 3))),
    ("groups2", (8, 8), (3, 3), 4, 6,
     dict(window_strides=(1, 1), padding="SAME", feature_group_count=2)),
    ("groups3_s2", (9, 8), (3, 3), 6, 9,
     dict(window_strides=(2, 2), padding="SAME", feature_group_count=3)),
    ("groups2_dil", (9, 9), (3, 3), 4, 4,
     dict(window_strides=(1, 1), padding="VALID", feature_group_count=2, rhs_dilation=(2, 1))),
    # 16+ input features: the kernel gradient's transposed-patches form
    ("wide_same_s1", (6, 5), (3, 3), 16, 8, dict(window_strides=(1, 1), padding="SAME")),
    ("wide_valid_s2_dil", (9, 8), (3, 2), 20, 6,
     dict(window_strides=(2, 1), padding="VALID", rhs_dilation=(1, 2))),
    ("depthwise", (8, 8), (3, 3), 5, 5,
     dict(window_strides=(1, 1), padding="SAME", feature_group_count=5)),
    ("depthwise_s2", (9, 8), (3, 3), 4, 4,
     dict(window_strides=(2, 2), padding="SAME", feature_group_count=4)),
    ("depthwise_mult2", (7, 7), (3, 3), 3, 6,
     dict(window_strides=(1, 2), padding="VALID", feature_group_count=3, rhs_dilation=(1, 2))),
]

DN = ("NHWC", "HWIO", "NHWC")


def _normal(rng, shape, scale=1.0):
    # numpy, not jax.random: each new jax.random shape costs a compilation of seconds on the CPU
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * scale)


def _inputs(seed, spatial, kernel, cin, cout, groups):
    rng = np.random.default_rng(seed)
    x = _normal(rng, (2, *spatial, cin))
    w = _normal(rng, (*kernel, cin // groups, cout), 0.3)
    return x, w, rng


def _value_and_grads(conv, kw):
    """jit(x, w, dy -> (y, dx, dw)): one compilation per case instead of one per eager op."""

    def f(x, w, dy):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, **kw), x, w)
        return (y, *vjp(dy))

    return jax.jit(f)


def _check(conv, x, w, rng, **kw):
    shape = jax.eval_shape(lambda x, w: lax.conv_general_dilated(x, w, **kw), x, w)
    dy = _normal(rng, shape.shape)
    ref = _value_and_grads(lax.conv_general_dilated, kw)(x, w, dy)
    got = _value_and_grads(conv, kw)(x, w, dy)
    for g, r, name in zip(got, ref, ("y", "dx", "dw")):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        np.testing.assert_allclose(g, r, err_msg=name, **TOL)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gemm_matches_lax_values_and_grads(case):
    _, spatial, kernel, cin, cout, kw = case
    x, w, kd = _inputs(0, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    _check(conv_general_dilated_gemm, x, w, kd, dimension_numbers=DN, **kw)


CHUNKED = ["same_s1", "same_s2_odd", "explicit_pad_s2", "lhs_dilation_s2", "groups3_s2",
           "one_by_one_s2", "rhs_dilation", "wide_same_s1", "wide_valid_s2_dil"]


@pytest.mark.parametrize("name", CHUNKED)
def test_gemm_in_batch_chunks(name, monkeypatch):
    # patches of one example per chunk: the lax.map / lax.scan paths of every pass
    monkeypatch.setattr(convmod, "_CHUNK_BYTES", 1)
    _, spatial, kernel, cin, cout, kw = next(c for c in CASES if c[0] == name)
    x, w, rng = _inputs(7, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    _check(conv_general_dilated_gemm, x, w, rng, dimension_numbers=DN, **kw)


# stride-1 3×3 cases Winograd computes (the others fall back to gemm: "same_s2", "groups2")
WINOGRAD = ["same_s1", "valid_s1", "explicit_pad_3x3_odd", "negative_pad", "wide_same_s1",
            "same_s2", "groups2"]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("name", WINOGRAD)
def test_winograd_matches_lax_values_and_grads(name, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(convmod, "_CHUNK_BYTES", 1)
    _, spatial, kernel, cin, cout, kw = next(c for c in CASES if c[0] == name)
    x, w, rng = _inputs(5, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    _check(conv_general_dilated_for("winograd"), x, w, rng, dimension_numbers=DN, **kw)


def test_winograd_transforms_compute_one_tile():
    # Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the 2×2 valid correlation of a 4×4 tile, in float64
    rng = np.random.default_rng(6)
    tile, kernel = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    b_t, g, a_t = (m.astype(np.float64) for m in (
        winograd.INPUT_TRANSFORM, winograd.KERNEL_TRANSFORM, winograd.OUTPUT_TRANSFORM))
    got = a_t @ ((g @ kernel @ g.T) * (b_t @ tile @ b_t.T)) @ a_t.T
    direct = np.array([[np.sum(tile[i:i + 3, j:j + 3] * kernel) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("passes", [("xla", "xla", "gemm"), ("gemm", "xla", "xla"),
                                    ("xla", "gemm", "xla")])
@pytest.mark.parametrize("name", ["same_s2_odd", "groups2", "lhs_dilation"])
def test_mixed_passes(passes, name):
    _, spatial, kernel, cin, cout, kw = next(c for c in CASES if c[0] == name)
    x, w, rng = _inputs(8, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    conv = functools.partial(convmod._conv_by_passes, passes)
    _check(conv, x, w, rng, dimension_numbers=DN, **kw)


@pytest.mark.parametrize("cin,cout,stride,side", [
    (4, 6, 1, 8), (128, 128, 1, 8), (128, 130, 2, 8), (128, 128, 1, 2), (256, 256, 1, 1)])
def test_auto_on_cpu_without_onednn_is_the_tuned_mix(cin, cout, stride, side, monkeypatch):
    # narrow, wide (XLA forward + input gradient, gemm kernel gradient), strided, and wide layers
    # on maps smaller than 8x8 (gemm); "auto" where oneDNN cannot be built
    monkeypatch.setattr(convmod, "_AUTO_ONEDNN", False)
    x, w, rng = _inputs(2, (side, side), (3, 3), cin, cout, 1)
    x, w = x * 0.25, w * 0.25
    kw = dict(window_strides=(stride, stride), padding="SAME", dimension_numbers=DN)
    assert jax.default_backend() == "cpu"
    chosen = []
    choose = convmod._auto_cpu_passes
    monkeypatch.setattr(convmod, "_auto_cpu_passes", lambda *a: chosen.append(choose(*a)) or chosen[-1])
    _check(conv_general_dilated_for("auto"), x, w, rng, **kw)
    expected = (("xla", "xla", "gemm") if min(cin, cout) >= 128 and stride == 1 and side >= 8
                else ("gemm",) * 3)
    assert chosen and set(chosen) == {expected}
    out_side = -(-side // stride)
    assert convmod._auto_cpu_passes(
        convmod._Cfg((3, 3), (stride,) * 2, ((1, 1),) * 2, (1, 1), (1, 1), 1, None, None), cin, cout,
        (out_side, out_side)) == expected


def test_gemm_grad_under_jit():
    kw = dict(window_strides=(2, 2), padding="SAME", dimension_numbers=DN)
    x, w, kd = _inputs(1, (8, 8), (3, 3), 3, 4, 1)

    def loss(conv, x, w):
        return jnp.sum(jnp.tanh(conv(x, w, **kw)))

    g_ref = jax.grad(loss, argnums=(1, 2))(lax.conv_general_dilated, x, w)
    g_got = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)(
        conv_general_dilated_gemm, x, w
    )
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a, b, **TOL)


def test_other_dimension_numbers_and_1d_3d():
    # NCHW / OIHW (lax's default layout)
    rng = np.random.default_rng(2)
    x = _normal(rng, (2, 4, 7, 6))
    w = _normal(rng, (6, 2, 3, 2), 0.3)
    _check(conv_general_dilated_gemm, x, w, rng, window_strides=(2, 1), padding="SAME",
           feature_group_count=2)
    # 1-D, NWC
    x = _normal(rng, (3, 10, 4))
    w = _normal(rng, (3, 4, 5), 0.3)
    _check(conv_general_dilated_gemm, x, w, rng, window_strides=(2,), padding="SAME",
           dimension_numbers=("NWC", "WIO", "NWC"))
    # 3-D, NDHWC with dilation
    x = _normal(rng, (2, 5, 6, 5, 3))
    w = _normal(rng, (2, 3, 2, 3, 4), 0.3)
    _check(conv_general_dilated_gemm, x, w, rng, window_strides=(1, 2, 1), padding="VALID",
           rhs_dilation=(2, 1, 1), dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))


def test_bf16_keeps_dtype_and_is_close():
    x, w, _ = _inputs(3, (8, 8), (3, 3), 4, 4, 1)
    kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN)

    @jax.jit
    def run(x, w):
        xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
        y = conv_general_dilated_gemm(xb, wb, **kw)
        g = jax.grad(lambda x, w: conv_general_dilated_gemm(x, w, **kw).sum(), (0, 1))(xb, wb)
        return y, g, lax.conv_general_dilated(x, w, **kw)

    y, (gx, gw), ref = run(x, w)
    assert y.dtype == jnp.bfloat16
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=5e-2, atol=5e-2)


def _params_like(module, x, rng):
    shapes = jax.eval_shape(module.init, jax.random.key(0), x)
    return jax.tree.map(lambda s: _normal(rng, s.shape, 0.3), shapes)


@pytest.mark.parametrize("impl", CONV_IMPLS)
def test_flax_conv_module_all_impls(impl):
    rng = np.random.default_rng(4)
    x = _normal(rng, (2, 9, 9, 3))
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


def test_unknown_impl_is_a_user_error():
    with pytest.raises(UserError):
        conv_general_dilated_for("cudnn")
    assert conv_general_dilated_for("xla") is lax.conv_general_dilated
