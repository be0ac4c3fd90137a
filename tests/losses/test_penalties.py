"""Weight penalties l2, l1, elastic_net with their default mask (biases and normalisation excluded)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax import gradcheck, losses


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train)(x)
        x = nn.LayerNorm()(x)
        x = nn.GroupNorm(num_groups=2)(x)
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


@pytest.fixture
def params():
    variables = jax.jit(Net().init)(jax.random.key(0), jnp.ones((1, 5, 5, 2)))
    # Non-trivial values everywhere, so excluded leaves would change the sums if counted.
    return jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(a.size), a.shape), variables["params"])


def test_default_mask_keeps_only_kernels(params):
    mask = losses.decay_mask(params)
    kept = {"/".join(str(k.key) for k in path) for path, keep in jax.tree_util.tree_leaves_with_path(mask) if keep}
    assert kept == {"Conv_0/kernel", "Dense_0/kernel"}


def test_default_mask_on_barebone_names():
    params = {"W1": jnp.ones((3, 4)), "b1": jnp.ones(4), "W2": jnp.ones((4, 2)), "b2": jnp.ones(2)}
    assert losses.decay_mask(params) == {"W1": True, "b1": False, "W2": True, "b2": False}


def _reference(params, fn):
    kernels = [params["Conv_0"]["kernel"], params["Dense_0"]["kernel"]]
    return sum(np.sum(fn(np.asarray(k, np.float64))) for k in kernels)


def test_values_against_numpy_float64(params):
    np.testing.assert_allclose(float(losses.l2(params)), _reference(params, np.square), rtol=1e-6)
    np.testing.assert_allclose(float(losses.l1(params)), _reference(params, np.abs), rtol=1e-6)
    beta = 0.7
    np.testing.assert_allclose(
        float(losses.elastic_net(params, beta)), _reference(params, lambda w: beta * w**2 + np.abs(w)), rtol=1e-6
    )


def test_explicit_and_callable_masks(params):
    everything = jax.tree.map(lambda _: True, params)
    total = sum(np.sum(np.asarray(leaf, np.float64) ** 2) for leaf in jax.tree.leaves(params))
    np.testing.assert_allclose(float(losses.l2(params, mask=everything)), total, rtol=1e-6)
    only_dense = lambda p: jax.tree_util.tree_map_with_path(lambda path, _: path[0].key == "Dense_0", p)  # noqa: E731
    expected = sum(np.sum(np.asarray(leaf, np.float64) ** 2) for leaf in jax.tree.leaves(params["Dense_0"]))
    np.testing.assert_allclose(float(losses.l2(params, mask=only_dense)), expected, rtol=1e-6)


def test_gradients(params):
    grads = jax.grad(losses.l2)(params)
    np.testing.assert_allclose(grads["Dense_0"]["kernel"], 2 * params["Dense_0"]["kernel"], rtol=1e-6)
    np.testing.assert_array_equal(grads["Dense_0"]["bias"], 0.0)
    np.testing.assert_array_equal(grads["BatchNorm_0"]["scale"], 0.0)
    l1_grads = jax.grad(losses.l1)(params)
    np.testing.assert_array_equal(l1_grads["Conv_0"]["kernel"], jnp.sign(params["Conv_0"]["kernel"]))
    small = {"w": np.array([[0.3, -0.8], [1.1, -0.2]]), "bias": np.array([0.5, 0.4])}
    for penalty in (losses.l2, losses.l1, lambda p: losses.elastic_net(p, 0.5)):
        gradcheck.assert_grad_close(penalty, small, tol=1e-6)
