"""Polyak averaging: an exponential moving average (EMA) of the parameters.

With α = `decay`, the average of the iterates θ_1 … θ_t (θ_0 the initial parameters) is

    debias=True (default):  θ̄_t = (1 − α) Σ_{k=1..t} α^{t−k} θ_k / (1 − α^t)
    debias=False:           θ̄_t = α^t θ_0 + (1 − α) Σ_{k=1..t} α^{t−k} θ_k

both kept by one recursion θ̄_t = (1 − w_t) θ̄_{t−1} + w_t θ_t, θ̄_0 = θ_0, with
w_t = (1 − α)/(1 − α^t) (debiased: the weights sum to 1 over θ_1 … θ_t, so a short run is not
pulled back to the initialisation; at t = 1 the average is θ_1) or w_t = 1 − α (the classic EMA
started at θ_0). Evaluating with θ̄ instead of the last iterate averages out the noise of the final
SGD steps. Any experiment keeps a `PolyakState` in its train state beside the optimizer state:

    averager = optim.polyak_average(0.999)
    state = state.replace(ema=averager.init(params))           # at creation
    ema = averager.update(new_params, state.ema)               # inside the jitted train step
    eval_step(ema.params, ...)                                 # evaluate the average

Under `shard_map`/`pmap` with replicated parameters it needs no communication.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax


class PolyakState(NamedTuple):
    """The number of updates t and the averaged parameters θ̄_t (the parameters' dtypes)."""

    count: jax.Array
    params: Any


class PolyakAverage(NamedTuple):
    """`init(params) -> PolyakState` and `update(params, state) -> PolyakState`, both pure."""

    init: Callable[[Any], PolyakState]
    update: Callable[[Any, PolyakState], PolyakState]


def polyak_average(decay: float, *, debias: bool = True) -> PolyakAverage:
    """The EMA of the parameters with weight `decay` (α, in [0, 1)) on the previous average.

    Optax twins: `optax.ema(decay, debias=True)` fed the parameters as its updates (debiased), and
    `optax.incremental_update(params, average, step_size=1 − decay)` (debias=False).
    """
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"polyak_average decay must be in [0, 1), got {decay}")

    def init(params):
        return PolyakState(count=jnp.zeros([], jnp.int32), params=jax.tree.map(jnp.array, params))

    def update(params, state):
        count = optax.safe_increment(state.count)
        if debias:
            # In the count's default float precision, so that 1 − α^t is not rounded to 0.
            weight = (1.0 - decay) / (1.0 - decay**count)
        else:
            weight = jnp.asarray(1.0 - decay)

        def mix(average, param):
            w = weight.astype(average.dtype)
            return (1 - w) * average + w * param.astype(average.dtype)

        return PolyakState(count=count, params=jax.tree.map(mix, state.params, params))

    return PolyakAverage(init=init, update=update)
