"""Newton's method (jax.hessian) and L-BFGS (optax.lbfgs) against closed forms and SciPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.optimize
from sklearn.datasets import load_digits

from visionax import optim


def test_one_newton_step_solves_a_quadratic():
    """f(θ) = ½ θᵀAθ − bᵀθ over a pytree: one step lands on A⁻¹b (float64, 1e-10)."""
    rng = np.random.default_rng(0)
    m = rng.normal(size=(8, 8))
    a = m @ m.T + 0.5 * np.eye(8)
    b = rng.normal(size=8)
    minimum = np.linalg.solve(a, b)
    with jax.enable_x64(True):

        def loss(params):
            theta = jnp.concatenate([params["w"].ravel(), params["v"]])
            return 0.5 * theta @ a @ theta - b @ theta

        start = {"w": jnp.asarray(rng.normal(size=(3, 2))), "v": jnp.asarray(rng.normal(size=2))}
        theta = jax.jit(lambda p: optim.newton_step(loss, p))(start)
        np.testing.assert_allclose(theta["w"].ravel(), minimum[:6], rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(theta["v"], minimum[6:], rtol=1e-10, atol=1e-10)


def test_newton_is_attracted_to_a_saddle_point():
    """f = x² − y²: Newton jumps onto the saddle (0, 0); gradient descent moves away along y."""
    loss = lambda p: p[0] ** 2 - p[1] ** 2
    start = jnp.array([0.3, 0.2])
    np.testing.assert_allclose(optim.newton_step(loss, start), [0.0, 0.0], atol=1e-7)
    gd = start - 0.1 * jax.grad(loss)(start)
    assert abs(gd[1]) > abs(start[1])


# A softmax classifier on the whole digits set: mean cross-entropy + λ/2 ‖θ‖² (biases included,
# so the optimum is unique).
L2 = 1e-3


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    return x / 16.0, y


def softmax_loss(params, x, y):
    logits = x @ params["w"] + params["b"]
    cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return cross_entropy + 0.5 * L2 * (jnp.sum(params["w"] ** 2) + jnp.sum(params["b"] ** 2))


@pytest.fixture(scope="module")
def optimum(digits):
    """The minimum of the same objective by SciPy's L-BFGS-B in float64 NumPy (exact gradient)."""
    x, y = digits
    n, d = x.shape
    onehot = np.eye(10)[y]

    def value_and_grad(theta):
        w, b = theta[: d * 10].reshape(d, 10), theta[d * 10 :]
        logits = x @ w + b
        logits = logits - logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        value = -(onehot * log_p).sum() / n + 0.5 * L2 * (theta @ theta)
        delta = (np.exp(log_p) - onehot) / n
        grad = np.concatenate([(x.T @ delta).ravel(), delta.sum(0)]) + L2 * theta
        return value, grad

    result = scipy.optimize.minimize(
        value_and_grad, np.zeros(d * 10 + 10), jac=True, method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 5000},
    )
    return result.fun


def zeros():
    return {"w": jnp.zeros((64, 10)), "b": jnp.zeros(10)}


def test_lbfgs_fits_a_full_batch_softmax_classifier_on_digits(digits, optimum):
    """100 L-BFGS steps (float32) reach SciPy's float64 minimum to 1e-4 relative."""
    x, y = jnp.asarray(digits[0], jnp.float32), jnp.asarray(digits[1])
    loss = lambda p: softmax_loss(p, x, y)
    result = jax.jit(lambda p: optim.lbfgs_minimize(loss, p, max_steps=100, tol=1e-6))(zeros())
    final = float(loss(result.params))
    assert final == pytest.approx(optimum, rel=1e-4)
    losses = np.asarray(result.losses[: int(result.num_steps)])
    assert losses[0] == pytest.approx(np.log(10.0), rel=1e-6)  # the loss at θ = 0
    assert np.all(np.diff(losses) <= 1e-6)  # the line search only accepts decreases
    accuracy = float(jnp.mean(jnp.argmax(x @ result.params["w"] + result.params["b"], 1) == y))
    assert accuracy > 0.97


def test_newton_fits_the_same_classifier_in_a_few_steps(digits, optimum):
    """Six Newton steps (650×650 Hessian, float64) reach the same minimum to 1e-10."""
    with jax.enable_x64(True):
        x, y = jnp.asarray(digits[0]), jnp.asarray(digits[1])
        loss = lambda p: softmax_loss(p, x, y)
        params, losses = jax.jit(lambda p: optim.newton(loss, p, num_steps=6))(zeros())
        assert float(losses[0]) == pytest.approx(np.log(10.0), rel=1e-12)
        assert float(loss(params)) == pytest.approx(optimum, rel=1e-10)
