"""The linear classifier s = x W + b against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np

from visionax.models.linear import LinearClassifier


def test_scores_are_the_flattened_input_times_w_plus_b():
    model = LinearClassifier(num_classes=4, weight_std=1e-3)
    x = np.random.default_rng(0).normal(size=(5, 3, 2, 1)).astype(np.float32)
    variables = model.init(jax.random.key(0), jnp.asarray(x))
    params = variables["params"]
    assert params["W"].shape == (6, 4) and params["b"].shape == (4,)
    assert 0.5e-3 < float(jnp.std(params["W"])) < 2e-3 and not np.any(params["b"])
    params = {"W": np.random.default_rng(1).normal(size=(6, 4)), "b": np.arange(4.0)}
    out = model.apply({"params": jax.tree.map(jnp.asarray, params)}, jnp.asarray(x))
    np.testing.assert_allclose(out, x.reshape(5, 6) @ params["W"] + params["b"], rtol=1e-5)
