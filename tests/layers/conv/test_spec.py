"""The canonical description of a convolution: output sizes by lax's own shape rule, the stride-1
input gradient as a forward convolution, padding and input dilation, accumulation dtypes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from tests.layers.conv.cases import CASE_IDS, DN, TOL, case, inputs, normal
from visionax.layers.conv.passes import xla_conv
from visionax.layers.conv.spec import ConvSpec, accumulation, padded, transposed_kernel


def _spec(name, x, w):
    _, _, kernel, _, _, kw = case(name)
    strides = kw["window_strides"]
    rdil = kw.get("rhs_dilation", (1, 1))
    padding = kw["padding"]
    if isinstance(padding, str):
        eff = [(k - 1) * r + 1 for k, r in zip(kernel, rdil)]
        padding = lax.padtype_to_pads(x.shape[1:-1], eff, strides, padding)
    return ConvSpec(kernel, strides, tuple(map(tuple, padding)), kw.get("lhs_dilation", (1, 1)),
                    rdil, kw.get("feature_group_count", 1), None, None)


def _inputs(name):
    _, spatial, kernel, cin, cout, kw = case(name)
    return inputs(1, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))


@pytest.mark.parametrize("name", CASE_IDS)
def test_out_spatial_is_lax_shape_rule(name):
    x, w, _ = _inputs(name)
    kw = case(name)[-1]
    want = jax.eval_shape(lambda x, w: lax.conv_general_dilated(x, w, dimension_numbers=DN, **kw),
                          x, w).shape[1:-1]
    assert _spec(name, x, w).out_spatial(x.shape[1:-1]) == want


STRIDE_1 = ["same_s1", "valid_s1", "explicit_pad", "explicit_pad_3x3_odd", "negative_pad",
            "rhs_dilation", "groups2", "groups2_dil", "wide_same_s1"]


@pytest.mark.parametrize("name", STRIDE_1)
def test_stride_1_input_gradient_is_the_transposed_convolution(name):
    # dx = conv(dy, flipped kernel with in/out features swapped) with pads (k-1)·r - lo, -hi
    x, w, rng = _inputs(name)
    spec = _spec(name, x, w)
    y, vjp = jax.vjp(lambda x: xla_conv(x, w, spec), x)
    dy = normal(rng, y.shape)
    (want,) = vjp(dy)
    got = xla_conv(dy, transposed_kernel(w, spec), spec.transposed())
    np.testing.assert_allclose(got, want, **TOL)


def test_padded_pads_crops_and_dilates_like_numpy():
    x = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    spec = ConvSpec((3, 3), (1, 1), ((2, -1), (1, 0)), (2, 1), (1, 1), 1, None, None)
    dilated = np.zeros((2, 5, 4, 2), np.float32)
    dilated[:, ::2] = x  # one zero between rows
    want = np.pad(dilated, ((0, 0), (2, 0), (1, 0), (0, 0)))[:, :-1]  # high pad -1 crops a row
    np.testing.assert_array_equal(padded(jnp.asarray(x), spec), want)
    np.testing.assert_array_equal(
        padded(jnp.asarray(np.moveaxis(x, -1, 0)), spec, channels_first=True),
        np.moveaxis(want, -1, 0))


@pytest.mark.parametrize("a,b,preferred,expected", [
    (jnp.float32, jnp.float32, None, (None, jnp.float32)),
    (jnp.bfloat16, jnp.bfloat16, None, (jnp.float32, jnp.bfloat16)),
    (jnp.float16, jnp.float32, None, (None, jnp.float32)),
    (jnp.bfloat16, jnp.bfloat16, jnp.float32, (jnp.float32, jnp.float32)),
])
def test_16_bit_products_accumulate_in_float32(a, b, preferred, expected):
    spec = ConvSpec((1,), (1,), ((0, 0),), (1,), (1,), 1, None,
                    None if preferred is None else jnp.dtype(preferred))
    acc, out = accumulation(jnp.zeros(1, a), jnp.zeros(1, b), spec)
    assert (acc, out) == tuple(None if e is None else jnp.dtype(e) for e in expected)
