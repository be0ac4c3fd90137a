"""conv_impl "gemm" (patches + matrix products, col2im, the depthwise path, batch chunks) equals
lax.conv_general_dilated in values and gradients within 1e-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.layers.conv.cases import CASE_IDS, DN, TOL, check_case, inputs
from visionax.layers.conv import ConvTuning, conv_general_dilated_for
from visionax.layers.conv.gemm import batch_chunk
from visionax.layers.conv.spec import ConvSpec

GEMM = conv_general_dilated_for("gemm")


@pytest.mark.parametrize("name", CASE_IDS)
def test_gemm_matches_lax_values_and_grads(name):
    check_case(GEMM, name, seed=0)


CHUNKED = ["same_s1", "same_s2_odd", "explicit_pad_s2", "lhs_dilation_s2", "groups3_s2",
           "one_by_one_s2", "rhs_dilation", "wide_same_s1", "wide_valid_s2_dil"]


@pytest.mark.parametrize("name", CHUNKED)
def test_gemm_in_batch_chunks(name):
    # patches of one example per chunk: the lax.map / lax.scan paths of every pass
    check_case(conv_general_dilated_for("gemm", ConvTuning(chunk_bytes=1)), name, seed=7)


@pytest.mark.parametrize("batch,budget,expected", [
    (8, 0, 8),            # 0: the whole batch
    (8, 10**9, 8),        # fits
    (8, 4 * 1600, 4),     # 4 examples of 1600 bytes of patches
    (6, 4 * 1600, 3),     # the largest divisor of 6 not above 4
    (7, 3 * 1600, 1),     # 7 is prime
    (8, 1, 1),
])
def test_batch_chunk_divides_the_batch_within_the_budget(batch, budget, expected):
    # a 2x2 kernel on 6x6 maps, 4 features: one example's patches are 5x5 outputs x 4 taps x
    # 4 features x 4 bytes = 1600 bytes
    spec = ConvSpec((2, 2), (1, 1), ((0, 0), (0, 0)), (1, 1), (1, 1), 1, None, None)
    per_example = 1600
    chunk = batch_chunk((batch, 6, 6, 4), 4, spec, ConvTuning(chunk_bytes=budget))
    assert chunk == expected
    assert batch % chunk == 0 and (budget <= 0 or chunk == 1 or chunk * per_example <= budget)


def test_gemm_grad_under_jit():
    kw = dict(window_strides=(2, 2), padding="SAME", dimension_numbers=DN)
    x, w, _ = inputs(1, (8, 8), (3, 3), 3, 4, 1)

    def loss(conv, x, w):
        return jnp.sum(jnp.tanh(conv(x, w, **kw)))

    g_ref = jax.grad(loss, argnums=(1, 2))(lax.conv_general_dilated, x, w)
    g_got = jax.jit(jax.grad(loss, argnums=(1, 2)), static_argnums=0)(GEMM, x, w)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a, b, **TOL)


def test_bf16_keeps_dtype_and_is_close():
    x, w, _ = inputs(3, (8, 8), (3, 3), 4, 4, 1)
    kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN)

    @jax.jit
    def run(x, w):
        xb, wb = x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)
        y = GEMM(xb, wb, **kw)
        g = jax.grad(lambda x, w: GEMM(x, w, **kw).sum(), (0, 1))(xb, wb)
        ref_g = jax.grad(lambda x, w: lax.conv_general_dilated(x, w, **kw).sum(), (0, 1))(x, w)
        return y, g, lax.conv_general_dilated(x, w, **kw), ref_g

    y, (gx, gw), ref, (ref_gx, ref_gw) = run(x, w)
    assert y.dtype == jnp.bfloat16
    assert gx.dtype == jnp.bfloat16 and gw.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(jnp.float32), ref, rtol=5e-2, atol=5e-2)
    np.testing.assert_allclose(gx.astype(jnp.float32), ref_gx, rtol=5e-2, atol=5e-2)
    np.testing.assert_allclose(gw.astype(jnp.float32), ref_gw, rtol=5e-2, atol=2e-1)

