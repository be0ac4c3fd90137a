"""The train state: one path from a model to a step-0 state, typed subclasses, and a checkpoint
pytree that round-trips every field (and nothing static)."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from visionax import optim
from visionax.train.state import AveragedTrainState, TrainState, create_train_state, initial_variables


class Tiny(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(3)(x.reshape(x.shape[0], -1))
        return nn.BatchNorm(use_running_average=not train)(x)


def test_create_train_state_initialises_model_optimizer_and_rng():
    model, tx = Tiny(), optax.adam(1e-3)
    rng = jax.random.PRNGKey(3)
    state = create_train_state(rng, model, tx, (2, 2, 1))
    init_rng, state_rng = jax.random.split(rng)
    expected = initial_variables(init_rng, model, (2, 2, 1))
    chex.assert_trees_all_equal(state.params, expected["params"])
    chex.assert_trees_all_equal(state.batch_stats, expected["batch_stats"])
    chex.assert_trees_all_equal(state.opt_state, tx.init(expected["params"]))
    np.testing.assert_array_equal(state.rng, state_rng)
    assert int(state.step) == 0 and state.apply_fn == model.apply and state.tx is tx
    assert set(state.variables) == {"params", "batch_stats"}


def test_apply_gradients_steps_the_optimizer():
    state = create_train_state(jax.random.PRNGKey(0), Tiny(), optax.sgd(0.5), (2, 2, 1))
    grads = jax.tree.map(jnp.ones_like, state.params)
    new = state.apply_gradients(grads, rng=jnp.zeros_like(state.rng))
    chex.assert_trees_all_close(new.params, jax.tree.map(lambda p: p - 0.5, state.params))
    assert int(new.step) == 1 and not np.any(np.asarray(new.rng))


def test_typed_fields_are_built_from_the_variables_and_round_trip_through_the_checkpoint_tree():
    averager = optim.polyak_average(0.9)
    state = create_train_state(jax.random.PRNGKey(0), Tiny(), optax.sgd(0.1), (2, 2, 1),
                               state_class=AveragedTrainState,
                               fields=lambda variables, rng: {"average": averager.init(variables["params"])})
    assert isinstance(state, AveragedTrainState)
    chex.assert_trees_all_equal(state.average.params, state.params)
    saved = state.savable()
    assert set(saved) == {"step", "params", "batch_stats", "opt_state", "rng", "average"}  # nothing static
    changed = jax.tree.map(lambda leaf: leaf + 1, saved)
    restored = state.restored(changed)
    assert isinstance(restored, AveragedTrainState) and restored.apply_fn == state.apply_fn
    chex.assert_trees_all_equal(restored.savable(), changed)


def test_plain_state_has_no_extra_fields():
    state = create_train_state(jax.random.PRNGKey(0), Tiny(), optax.sgd(0.1), (2, 2, 1))
    assert type(state) is TrainState
    assert set(state.savable()) == {"step", "params", "batch_stats", "opt_state", "rng"}
