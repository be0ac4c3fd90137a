"""visionax.gradcheck: centred differences in float64 and the relative error."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax import gradcheck


def test_numeric_grad_matches_closed_form_in_float64():
    x = np.linspace(-1.3, 2.1, 7)
    numeric = gradcheck.numeric_grad(lambda v: jnp.sum(jnp.sin(v) * v**2), x)
    exact = np.cos(x) * x**2 + 2 * x * np.sin(x)
    assert numeric.dtype == np.float64
    np.testing.assert_allclose(numeric, exact, rtol=1e-8, atol=1e-10)


def test_numeric_grad_of_a_pytree_and_float32_inputs():
    params = {"w": np.float32([[0.5, -1.0], [2.0, 0.25]]), "b": np.float32([0.1, -0.2])}
    x = np.float32([1.5, -0.5])

    def f(p):
        return jnp.sum(jnp.tanh(x @ p["w"] + p["b"]) ** 2)

    numeric = gradcheck.numeric_grad(f, params)
    with jax.enable_x64(True):
        exact = jax.grad(f)(jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params))
    for name in params:
        np.testing.assert_allclose(numeric[name], np.asarray(exact[name]), rtol=1e-8)
    assert gradcheck.check_grad(f, params) < 1e-8


def test_relative_error_formula_and_floor():
    assert gradcheck.relative_error(np.array([1.0, 2.0]), np.array([1.0, 2.2])) == pytest.approx(0.2 / 2.2)
    assert gradcheck.relative_error(np.zeros(3), np.zeros(3)) == 0.0
    # An entry far below the leaf's scale is divided by floor · scale rather than by ~0.
    error = gradcheck.relative_error(np.array([1.0, 1e-12]), np.array([1.0, 2e-12]), floor=1e-3)
    assert error == pytest.approx(1e-12 / 1e-3)


def test_check_grad_catches_a_wrong_gradient():
    @jax.custom_vjp
    def square(x):
        return x * x

    square.defvjp(lambda x: (x * x, x), lambda x, g: (g * 3.0 * x,))  # wrong: 3x instead of 2x
    x = np.array([0.3, -1.2, 2.0])
    assert gradcheck.check_grad(lambda v: jnp.sum(square(v)), x) > 0.1
    with pytest.raises(AssertionError, match="gradient check failed"):
        gradcheck.assert_grad_close(lambda v: jnp.sum(square(v)), x)
    assert gradcheck.assert_grad_close(lambda v: jnp.sum(v * v), x) < 1e-8
