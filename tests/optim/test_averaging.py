"""visionax.optim.averaging: the Polyak average against its closed form and Optax's EMA."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.optim.cases import make_problem
from visionax import optim


@pytest.mark.parametrize("debias", [True, False], ids=["debiased", "from_theta0"])
def test_polyak_average_matches_closed_form_and_optax(debias):
    decay, steps = 0.9, 50
    rng = np.random.default_rng(2)
    thetas = rng.normal(size=(steps + 1, 3, 2))
    with jax.enable_x64(True):
        averager = optim.polyak_average(decay, debias=debias)
        state = averager.init({"w": jnp.asarray(thetas[0])})
        update = jax.jit(averager.update)
        if debias:  # optax.ema fed the parameters as updates returns the debiased EMA
            twin_tx = optax.ema(decay, debias=True)
            twin_state = twin_tx.init(jnp.asarray(thetas[0]))
        else:
            twin = jnp.asarray(thetas[0])
        for t in range(1, steps + 1):
            state = update({"w": jnp.asarray(thetas[t])}, state)
            if debias:
                twin, twin_state = twin_tx.update(jnp.asarray(thetas[t]), twin_state)
            else:
                twin = optax.incremental_update(jnp.asarray(thetas[t]), twin, step_size=1 - decay)
            if t == 1 and debias:
                np.testing.assert_allclose(state.params["w"], thetas[1], rtol=1e-12)
    weights = (1 - decay) * decay ** (steps - np.arange(1, steps + 1))
    if debias:  # θ̄_T = (1 − α) Σ_{k=1..T} α^{T−k} θ_k / (1 − α^T)
        closed_form = np.tensordot(weights, thetas[1:], axes=1) / (1 - decay**steps)
    else:  # θ̄_T = α^T θ_0 + (1 − α) Σ_{k=1..T} α^{T−k} θ_k
        closed_form = decay**steps * thetas[0] + np.tensordot(weights, thetas[1:], axes=1)
    assert int(state.count) == steps
    np.testing.assert_allclose(state.params["w"], closed_form, rtol=1e-12)
    np.testing.assert_allclose(state.params["w"], twin, rtol=1e-12)


def test_polyak_average_keeps_float32_and_does_not_retrace():
    chex.clear_trace_counter()
    averager = optim.polyak_average(0.999)
    _, _, params, _ = make_problem(np.float32)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(params, state):
        return averager.update(params, state)

    state = averager.init(params)
    for _ in range(3):
        state = update(params, state)
    chex.assert_trees_all_equal_dtypes(state.params, params)
    chex.assert_trees_all_close(state.params, params, rtol=1e-6)  # the average of a constant
