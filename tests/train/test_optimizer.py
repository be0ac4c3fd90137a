"""The optimizer builder: the config's rule, schedule and linear scaling rule, and weight decay on
the one mask (kernels only) unless the config says "all" — checked update by update."""

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from visionax import optim, schedules
from visionax.errors import UserError
from visionax.losses.penalties import decay_mask
from visionax.train.optimizer import create_optimizer, learning_rate_schedule

PARAMS = {"conv": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.ones(4)},
          "BatchNorm_0": {"scale": jnp.ones(4), "bias": jnp.zeros(4)}}


def config(**changes):
    values = dict(optimizer="momentum", learning_rate=0.1, scale_learning_rate=False, schedule="constant",
                  warmup_epochs=0, weight_decay=0.0, weight_decay_mask="weights", batch_size=512)
    values.update(changes)
    return ml_collections.ConfigDict(values)


def updates_of(tx, steps=3):
    state = tx.init(PARAMS)
    grads = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), PARAMS)
    out = []
    for _ in range(steps):
        update, state = tx.update(grads, state, PARAMS)
        out.append(update)
    return out


def test_weight_decay_reaches_the_kernels_only():
    built = create_optimizer(config(weight_decay=0.01), total_steps=10, steps_per_epoch=5)
    expected = optax.chain(optax.masked(optim.add_decayed_weights(weight_decay=0.01), decay_mask),
                           optim.momentum(0.1))
    chex.assert_trees_all_close(updates_of(built), updates_of(expected))
    plain = updates_of(optim.momentum(0.1))
    for ours, without in zip(updates_of(built), plain):
        np.testing.assert_allclose(ours["conv"]["bias"], without["conv"]["bias"], rtol=1e-6)
        np.testing.assert_allclose(ours["BatchNorm_0"]["scale"], without["BatchNorm_0"]["scale"], rtol=1e-6)
        assert not np.allclose(ours["conv"]["kernel"], without["conv"]["kernel"])
    everything = create_optimizer(config(weight_decay=0.01, weight_decay_mask="all"), total_steps=10,
                                  steps_per_epoch=5)
    assert not np.allclose(updates_of(everything)[0]["conv"]["bias"], plain[0]["conv"]["bias"])


def test_lars_takes_the_same_mask():
    built = create_optimizer(config(optimizer="lars", weight_decay=1e-3), total_steps=10, steps_per_epoch=5)
    chex.assert_trees_all_close(updates_of(built), updates_of(optim.lars(0.1, weight_decay=1e-3, mask=decay_mask)))


@pytest.mark.parametrize("name, expected", [
    ("constant", lambda t: 0.2),
    ("cosine", lambda t: 0.1 * (1 + np.cos(np.pi * t / 100))),
    ("warmup_cosine", lambda t: 0.2 * t / 10 if t < 10 else 0.1 * (1 + np.cos(np.pi * (t - 10) / 90))),
    ("step", lambda t: 0.2 * 0.1 ** ((t >= 60) + (t >= 80))),
])
def test_schedules_with_the_linear_scaling_rule(name, expected):
    # base 0.1 at batch 512: peak 0.1 × 512 / 256 = 0.2; 100 steps of 5 per epoch, 2 warmup epochs
    schedule = learning_rate_schedule(config(schedule=name, scale_learning_rate=True, warmup_epochs=2),
                                      total_steps=100, steps_per_epoch=5)
    for t in (0, 5, 10, 50, 59, 60, 79, 80, 99):
        np.testing.assert_allclose(float(schedule(t)), expected(t), rtol=1e-5, atol=1e-7)
    assert schedules.linear_scaling_rule(0.1, 512) == pytest.approx(0.2)


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate": 0.0}, "learning_rate=0.0 must be positive"),
    ({"weight_decay": -1.0}, "weight_decay=-1.0 must be >= 0"),
    ({"schedule": "linear"}, "unknown schedule 'linear'"),
    ({"weight_decay_mask": "biases"}, "unknown weight_decay_mask 'biases'"),
    ({"optimizer": "adamw"}, "unknown optimizer 'adamw'"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1 must be >= 0"),
])
def test_bad_values_are_user_errors(changes, message):
    with pytest.raises(UserError, match=message):
        create_optimizer(config(**changes), total_steps=10, steps_per_epoch=5)
