"""Activations: values against NumPy float64 formulas and jax.nn, gradients against jax.nn and finite differences."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax import gradcheck
from visionax.layers import activations as A

# Away from the kinks at 0 (|x| ≥ 0.05), so finite differences are smooth.
X = np.concatenate([np.linspace(-4.0, -0.05, 12), np.linspace(0.05, 4.0, 12)])


def sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-x))


FORMULAS = {
    "sigmoid": (A.sigmoid, sigmoid64, jax.nn.sigmoid),
    "tanh": (A.tanh, np.tanh, jnp.tanh),
    "relu": (A.relu, lambda x: np.maximum(0.0, x), jax.nn.relu),
    "leaky_relu": (A.leaky_relu, lambda x: np.maximum(0.01 * x, x), lambda x: jax.nn.leaky_relu(x, 0.01)),
    "abs_rectify": (A.abs_rectify, np.abs, jnp.abs),
    "elu": (A.elu, lambda x: np.where(x > 0, x, np.exp(x) - 1.0), jax.nn.elu),
    "selu": (A.selu, lambda x: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * (np.exp(x) - 1.0)), jax.nn.selu),
    "swish": (A.swish, lambda x: x * sigmoid64(x), jax.nn.swish),
}


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_values_against_formula_and_jax_nn(name):
    ours, formula, reference = FORMULAS[name]
    x = jnp.asarray(X, jnp.float32)
    np.testing.assert_allclose(ours(x), formula(X), rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(ours(x), reference(x), rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_gradients_against_jax_nn_and_finite_differences(name):
    ours, _, reference = FORMULAS[name]
    x = jnp.asarray(X, jnp.float32)
    np.testing.assert_allclose(jax.vmap(jax.grad(ours))(x), jax.vmap(jax.grad(reference))(x), rtol=2e-6, atol=1e-7)
    gradcheck.assert_grad_close(lambda v: jnp.sum(ours(v) * jnp.arange(1.0, 25.0)), X)


def test_leaky_relu_and_elu_parameters():
    np.testing.assert_allclose(A.leaky_relu(jnp.array([-2.0, 3.0]), 0.2), [-0.4, 3.0])
    np.testing.assert_allclose(A.elu(jnp.array([-1.0, 2.0]), 0.5), [0.5 * (np.exp(-1.0) - 1.0), 2.0], rtol=1e-6)
    assert A.SELU_LAMBDA == pytest.approx(1.0507009873554805) and A.SELU_ALPHA == pytest.approx(1.6732632423543772)


def test_saturating_and_large_inputs_stay_finite():
    big = jnp.array([-1000.0, -80.0, 80.0, 1000.0])
    for fn in (A.sigmoid, A.tanh, A.elu, A.selu, A.swish):
        value, grad = fn(big), jax.vmap(jax.grad(fn))(big)
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad)), fn.__name__
    np.testing.assert_allclose(A.sigmoid(big), [0.0, np.exp(-80.0), 1.0, 1.0], rtol=1e-6)
    # The lecture's point: sigmoid and tanh kill gradients when saturated (at 0: 1/4 and 1). σ'(10) =
    # 4.5e-5 is resolved in float32; tanh'(10) = 1 − tanh²(10) = 8.2e-9 is not (1 − t² near t = 1
    # moves in steps of ~1.2e-7), so float32 gives 0 or a few of those steps, by how XLA evaluates tanh.
    np.testing.assert_allclose(float(jax.grad(A.sigmoid)(10.0)), 4.5395807e-5, rtol=1e-3)
    assert float(jax.grad(A.tanh)(10.0)) < 1e-6


def test_relu_gradient_is_zero_at_zero():
    assert float(jax.grad(A.relu)(0.0)) == 0.0 == float(jax.grad(jax.nn.relu)(0.0))


def test_swish_with_beta():
    x = jnp.asarray(X, jnp.float32)
    np.testing.assert_allclose(A.swish(x, 2.0), X * sigmoid64(2.0 * X), rtol=2e-6, atol=1e-7)
    gradcheck.assert_grad_close(lambda b: jnp.sum(A.swish(X, b)), np.array(1.7))


def test_maxout_against_numpy():
    x = np.random.default_rng(0).normal(size=(3, 12)).astype(np.float32)
    np.testing.assert_array_equal(A.maxout(x, 3), x.reshape(3, 4, 3).max(axis=-1))
    x4 = np.random.default_rng(1).normal(size=(2, 6, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(A.maxout(x4, 2, axis=1), x4.reshape(2, 3, 2, 5, 3).max(axis=2))
    with pytest.raises(ValueError, match="divisible"):
        A.maxout(x, 5)
    gradcheck.assert_grad_close(lambda v: jnp.sum(A.maxout(v, 3) * jnp.arange(1.0, 13.0).reshape(3, 4)), x.astype(np.float64))


def test_maxout_module_is_max_of_k_affine_maps():
    x = jax.random.normal(jax.random.key(0), (4, 5))
    module = A.Maxout(features=3, k=2)
    variables = module.init(jax.random.key(1), x)
    kernel, bias = variables["params"]["Dense_0"]["kernel"], variables["params"]["Dense_0"]["bias"]
    z = np.asarray(x @ kernel + bias).reshape(4, 3, 2)
    np.testing.assert_allclose(module.apply(variables, x), z.max(-1), rtol=1e-6)


def test_prelu_learns_one_alpha_per_channel():
    x = jax.random.normal(jax.random.key(0), (2, 3, 3, 4))
    module = A.PReLU()
    variables = module.init(jax.random.key(1), x)
    np.testing.assert_array_equal(variables["params"]["alpha"], np.full(4, 0.25, np.float32))
    alpha = jnp.array([0.1, -0.2, 0.5, 2.0])
    variables = {"params": {"alpha": alpha}}
    np.testing.assert_allclose(module.apply(variables, x), np.maximum(0, x) + np.asarray(alpha) * np.minimum(0, x), rtol=1e-6)
    grad = jax.grad(lambda v: jnp.sum(module.apply(v, x)))(variables)["params"]["alpha"]
    np.testing.assert_allclose(grad, np.minimum(0, np.asarray(x)).sum(axis=(0, 1, 2)), rtol=1e-5)
    xs = np.asarray(x, np.float64)
    xs = np.where(np.abs(xs) < 0.05, 0.3, xs)
    gradcheck.assert_grad_close(lambda p: jnp.sum(jnp.sin(module.apply({"params": p["v"]}, p["x"]))),
                                {"v": {"alpha": np.asarray(alpha)}, "x": xs})


def test_swish_module_fixed_and_learned_beta():
    x = jnp.asarray(X, jnp.float32)
    fixed = A.Swish(beta=2.0, learn_beta=False)
    assert fixed.init(jax.random.key(0), x) == {}
    np.testing.assert_allclose(fixed.apply({}, x), X * sigmoid64(2.0 * X), rtol=2e-6, atol=1e-7)
    learned = A.Swish(beta=1.5)
    variables = learned.init(jax.random.key(0), x)
    assert float(variables["params"]["beta"]) == 1.5
    gradcheck.assert_grad_close(lambda p: jnp.sum(learned.apply({"params": p}, X)), {"beta": np.array(1.5)})


def test_usable_inside_a_module():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return A.PReLU()(A.Maxout(4, 2)(x))

    x = jnp.ones((2, 3))
    variables = Net().init(jax.random.key(0), x)
    assert Net().apply(variables, x).shape == (2, 4)
