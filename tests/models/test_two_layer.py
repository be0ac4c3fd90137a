"""The three abstraction levels give the same outputs and gradients for the same parameters."""

import jax
import jax.numpy as jnp
import numpy as np

from visionax import gradcheck, losses
from visionax.models import two_layer as T

D_IN, HIDDEN, CLASSES = 12, 16, 5


def _setup():
    params = T.init_params(jax.random.key(0), D_IN, HIDDEN, CLASSES)
    params = {**params, "b1": 0.1 * jax.random.normal(jax.random.key(1), (HIDDEN,)),
              "b2": 0.1 * jax.random.normal(jax.random.key(2), (CLASSES,))}
    x = jax.random.normal(jax.random.key(3), (8, 3, 4))  # flattened to 12 by every level
    labels = jnp.arange(8) % CLASSES
    return params, x, labels


def test_same_parameter_shapes_at_every_level():
    params, x, _ = _setup()
    module_shapes = jax.tree.map(jnp.shape, T.TwoLayerNet(HIDDEN, CLASSES).init(jax.random.key(0), x))
    sequential_shapes = jax.tree.map(jnp.shape, T.two_layer_sequential(HIDDEN, CLASSES).init(jax.random.key(0), x))
    assert module_shapes == jax.tree.map(jnp.shape, T.module_variables(params))
    assert sequential_shapes == jax.tree.map(jnp.shape, T.sequential_variables(params))


def test_same_outputs_and_gradients():
    params, x, labels = _setup()
    module, sequential = T.TwoLayerNet(HIDDEN, CLASSES), T.two_layer_sequential(HIDDEN, CLASSES)

    scores = T.forward(params, x)
    reference = np.maximum(0, np.asarray(x).reshape(8, -1) @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    np.testing.assert_allclose(scores, reference, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(module.apply(T.module_variables(params), x), scores, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sequential.apply(T.sequential_variables(params), x), scores, rtol=1e-6, atol=1e-6)

    def barebone_loss(p):
        return losses.softmax_cross_entropy(T.forward(p, x), labels)

    def module_loss(p):
        return losses.softmax_cross_entropy(module.apply(T.module_variables(p), x), labels)

    def sequential_loss(p):
        return losses.softmax_cross_entropy(sequential.apply(T.sequential_variables(p), x), labels)

    grads = jax.grad(barebone_loss)(params)
    for other in (module_loss, sequential_loss):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), jax.grad(other)(params), grads)
    # Gradients taken on the Module's own variables map back to the barebone ones.
    module_grads = jax.grad(lambda v: losses.softmax_cross_entropy(module.apply(v, x), labels))(T.module_variables(params))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), T.params_from_module(module_grads), grads)


def test_barebone_gradient_by_finite_differences():
    params, x, labels = _setup()
    small = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    gradcheck.assert_grad_close(lambda p: losses.softmax_cross_entropy(T.forward(p, np.asarray(x, np.float64)), labels), small)


def test_jit_and_training_step_agree_across_levels():
    params, x, labels = _setup()
    module = T.TwoLayerNet(HIDDEN, CLASSES)

    @jax.jit
    def step(p):
        g = jax.grad(lambda q: losses.softmax_cross_entropy(T.forward(q, x), labels))(p)
        return jax.tree.map(lambda w, d: w - 0.1 * d, p, g)

    @jax.jit
    def module_step(v):
        g = jax.grad(lambda q: losses.softmax_cross_entropy(module.apply(q, x), labels))(v)
        return jax.tree.map(lambda w, d: w - 0.1 * d, v, g)

    p, v = params, T.module_variables(params)
    for _ in range(5):
        p, v = step(p), module_step(v)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), T.params_from_module(v), p)
