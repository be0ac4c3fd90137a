"""A workdir belongs to one config (resumable keys excepted); load_variables reads a checkpoint
without building the model's optimizer."""

import json

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from visionax.errors import UserError
from visionax.train import checkpoint
from visionax.train.state import TrainState


def config(**changes):
    values = {"seed": 0, "log_every": 1, "eval_every": 0, "checkpoint_every": 2, "keep_checkpoints": 1,
              "data": {"name": "digits"}}
    values.update(changes)
    return ml_collections.ConfigDict(values)


def test_claim_writes_the_config_and_refuses_another(tmp_path):
    checkpoint.claim_workdir(tmp_path, config())
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0
    with pytest.raises(UserError, match=r"another config \(changed: data.name, seed\)"):
        checkpoint.claim_workdir(tmp_path, config(seed=1, data={"name": "cifar10"}))
    assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0


@pytest.mark.parametrize("key", checkpoint.RESUMABLE_KEYS)
def test_keys_that_cannot_change_the_result_may_change(tmp_path, key):
    checkpoint.claim_workdir(tmp_path, config(save_embeddings=False))
    *parents, name = key.split(".")  # data.in_memory_mb: config["data"]["in_memory_mb"]
    changed = config()
    node = changed
    for part in parents:
        node = node[part]
    node[name] = 5
    checkpoint.claim_workdir(tmp_path, changed)
    saved = json.loads((tmp_path / "config.json").read_text())
    for part in parents:
        saved = saved[part]
    assert saved[name] == 5


def small_state(value: float) -> TrainState:
    tx = optax.sgd(0.1, momentum=0.9)
    params = {"dense": {"kernel": jnp.full((2, 3), value), "bias": jnp.zeros(3)}}
    return TrainState(step=jnp.asarray(4, jnp.int32), params=params, batch_stats={"bn": {"mean": jnp.ones(3)}},
                      opt_state=tx.init(params), rng=jax.random.PRNGKey(0), apply_fn=None, tx=tx)


def test_load_variables_returns_params_and_statistics_of_the_latest_checkpoint(tmp_path):
    manager = checkpoint.manager(tmp_path, keep=2, every=1)
    checkpoint.save(manager, small_state(1.0))
    manager.wait_until_finished()
    checkpoint.save(manager, small_state(2.0).replace(step=jnp.asarray(9)))
    manager.wait_until_finished()
    manager.close()
    variables, step = checkpoint.load_variables(tmp_path)
    assert step == 9 and set(variables) == {"params", "batch_stats"}
    np.testing.assert_array_equal(variables["params"]["dense"]["kernel"], np.full((2, 3), 2.0))
    np.testing.assert_array_equal(variables["batch_stats"]["bn"]["mean"], np.ones(3))


def test_restore_latest_round_trips_every_field(tmp_path):
    manager = checkpoint.manager(tmp_path, keep=2, every=1)
    saved = small_state(3.0)
    saved = saved.replace(opt_state=jax.tree.map(lambda leaf: leaf + 0.5, saved.opt_state))
    checkpoint.save(manager, saved)
    manager.wait_until_finished()
    restored = checkpoint.restore_latest(manager, small_state(0.0).replace(step=jnp.asarray(0, jnp.int32)))
    manager.close()
    chex.assert_trees_all_equal(restored.savable(), saved.savable())


def test_load_variables_of_a_workdir_without_checkpoints_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="holds no checkpoints"):
        checkpoint.load_variables(tmp_path)
