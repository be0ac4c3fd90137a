"""Initializers: Xavier N(0,1)/√d_in and Kaiming N(0,1)·√(2/d) with d = d_in or d_out, against
jax.nn.initializers (flax's variance_scaling), their fan formulas and sample statistics."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.errors import UserError
from visionax.layers import init


@pytest.mark.parametrize("shape", [(256, 128), (3, 3, 16, 32)])
def test_same_draws_as_variance_scaling(shape):
    key = jax.random.key(3)
    xavier_ref = jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal")(key, shape)
    kaiming_ref = jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")(key, shape)
    np.testing.assert_allclose(init.xavier()(key, shape), xavier_ref, rtol=1e-6)
    np.testing.assert_allclose(init.kaiming()(key, shape), kaiming_ref, rtol=1e-6)


@pytest.mark.parametrize("shape", [(256, 128), (3, 3, 16, 32), (3, 3, 1, 24), (5, 2, 7)])
def test_fan_out_same_draws_as_variance_scaling(shape):
    # Dense, convolution, depthwise convolution (c_in per group = 1) and a 1-D convolution kernel.
    key = jax.random.key(4)
    ref = nn.initializers.variance_scaling(2.0, "fan_out", "normal")(key, shape)
    np.testing.assert_allclose(init.kaiming(mode="fan_out")(key, shape), ref, rtol=1e-6)
    np.testing.assert_array_equal(init.kaiming(mode="fan_in")(key, shape), init.kaiming()(key, shape))


@pytest.mark.parametrize(
    "initializer, shape, expected_std",
    [
        (init.small_random(), (400, 300), 0.01),
        (init.xavier(), (400, 300), 1 / math.sqrt(400)),
        (init.kaiming(), (400, 300), math.sqrt(2 / 400)),
        (init.xavier(), (3, 3, 40, 64), 1 / math.sqrt(360)),
        (init.kaiming(), (3, 3, 40, 64), math.sqrt(2 / 360)),
        (init.kaiming(mode="fan_out"), (400, 300), math.sqrt(2 / 300)),
        (init.kaiming(mode="fan_out"), (3, 3, 40, 64), math.sqrt(2 / (9 * 64))),
    ],
)
def test_sample_std_matches_formula(initializer, shape, expected_std):
    w = np.asarray(initializer(jax.random.key(0), shape), np.float64)
    n = w.size
    # Standard errors of the sample mean σ/√n and of the sample std σ/√(2n): 5 of them.
    assert abs(w.mean()) < 5 * expected_std / math.sqrt(n)
    assert abs(w.std() - expected_std) < 5 * expected_std / math.sqrt(2 * n)


def test_fan_in_and_dtype():
    assert init.fan_in((64, 10)) == 64 and init.fan_in((3, 3, 16, 32)) == 144
    with pytest.raises(ValueError):
        init.fan_in((5,))
    assert init.kaiming()(jax.random.key(0), (4, 4), jnp.float16).dtype == jnp.float16


def test_fan_out_formula_and_mode_errors():
    # d_out of a Dense kernel; kh·kw·c_out of a convolution (also grouped: c_in per group does not enter).
    assert init.fan_out((64, 10)) == 10 and init.fan_out((3, 3, 16, 32)) == 288
    assert init.fan_out((3, 3, 1, 32)) == 288 and init.fan_out((7, 4, 6)) == 42
    with pytest.raises(ValueError):
        init.fan_out((5,))
    assert init.kaiming(mode="fan_out")(jax.random.key(0), (4, 4), jnp.float16).dtype == jnp.float16
    with pytest.raises(ValueError, match="fan_avg"):
        init.kaiming(mode="fan_avg")


def test_as_flax_kernel_init():
    layer = nn.Dense(32, kernel_init=init.kaiming())
    variables = layer.init(jax.random.key(7), jnp.ones((1, 50)))
    kernel = variables["params"]["kernel"]
    assert kernel.shape == (50, 32)
    # Flax derives the key from the module path, so compare statistics, not draws.
    assert abs(float(jnp.std(kernel)) - math.sqrt(2 / 50)) < 5 * math.sqrt(2 / 50) / math.sqrt(2 * kernel.size)


def test_get_by_name():
    assert set(init.INITIALIZERS) == {"small_random", "xavier", "kaiming"}
    np.testing.assert_array_equal(init.get("xavier")(jax.random.key(0), (8, 8)), init.xavier()(jax.random.key(0), (8, 8)))
    with pytest.raises(UserError, match="unknown initializer"):
        init.get("glorot")
