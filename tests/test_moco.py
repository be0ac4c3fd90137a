"""MoCo: momentum update and queue against closed forms, shuffle BN against NumPy, 8 vs 1 devices."""

import dataclasses
import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec

from visionax.data.augment import simclr_views
from visionax.errors import UserError
from visionax.layers.norm import BatchNorm
from visionax.losses import info_nce
from visionax.losses.contrastive import l2_normalize
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl import moco
from visionax.ssl.heads import ContrastiveModel

DEVICES = 8


def test_momentum_update_closed_form():
    rng = np.random.default_rng(0)
    key_params = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    query_params = {"w": rng.normal(size=(3, 2)), "b": rng.normal(size=2)}
    updated = key_params
    for _ in range(5):  # fixed θq: θk_t = m^t θk_0 + (1 − m^t) θq
        updated = moco.momentum_update(updated, query_params, 0.9)
    expected = jax.tree.map(lambda k, q: 0.9 ** 5 * k + (1 - 0.9 ** 5) * q, key_params, query_params)
    chex.assert_trees_all_close(updated, expected, rtol=1e-12)


def test_enqueue_overwrites_oldest_rows_and_wraps():
    queue = np.arange(24.0).reshape(6, 4)
    keys = -np.arange(8.0).reshape(2, 4) - 1
    new_queue, pointer = moco.enqueue(jnp.asarray(queue), jnp.asarray(4), jnp.asarray(keys))
    expected = queue.copy()
    expected[4:6] = keys
    np.testing.assert_array_equal(new_queue, expected)
    assert int(pointer) == 0


def test_queue_size_must_be_a_multiple_of_the_global_batch():
    moco.check_queue_size(64, 16)
    with pytest.raises(UserError, match="queue_size=60 is not a multiple of the global batch 16"):
        moco.check_queue_size(60, 16)
    with pytest.raises(UserError, match="unknown MoCo version"):
        moco.moco_preset("v3")


def test_presets_are_the_papers_settings():
    v1, v2 = moco.moco_preset("v1"), moco.moco_preset("v2")
    assert (v1.head, v1.temperature, v1.momentum, v1.cosine_schedule, v1.blur_probability) == (
        "linear", 0.07, 0.999, False, 0.0)
    assert (v2.head, v2.temperature, v2.cosine_schedule, v2.blur_probability) == ("mlp", 0.2, True, 0.5)
    assert moco.projection_head(v1, 64).num_layers == 1 and moco.projection_head(v2, 64).num_layers == 2
    assert moco.moco_preset("v2", queue_size=128).queue_size == 128


def test_shuffle_bn_unshuffle_restores_order_and_groups_match_numpy():
    """Shuffle, normalise each device's batch as BatchNorm does, unshuffle: every example comes back
    to its place, normalised with the statistics of the device group it was shuffled into."""
    examples = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    key = jax.random.key(3)

    def per_device(local):
        shuffled, permutation = moco.shuffle_across_devices(key, local)
        normalised = (shuffled - shuffled.mean(0)) / jnp.sqrt(shuffled.var(0) + 1e-5)
        return (moco.unshuffle_across_devices(shuffled, permutation),
                moco.unshuffle_across_devices(normalised, permutation), shuffled, permutation[None])

    function = jax.shard_map(per_device, mesh=make_mesh(), in_specs=PartitionSpec(DATA_AXIS),
                             out_specs=PartitionSpec(DATA_AXIS), check_vma=False)
    restored, normalised, shuffled, permutations = jax.jit(function)(examples)
    permutation = np.asarray(permutations[0])
    assert all(np.array_equal(p, permutation) for p in np.asarray(permutations))
    assert sorted(permutation) == list(range(16)) and not np.array_equal(permutation, np.arange(16))
    np.testing.assert_array_equal(restored, examples)
    np.testing.assert_array_equal(shuffled, examples[permutation])
    expected = np.empty_like(examples, dtype=np.float64)
    for device in range(DEVICES):
        group = permutation[2 * device: 2 * device + 2]
        values = examples[group].astype(np.float64)
        expected[group] = (values - values.mean(0)) / np.sqrt(values.var(0) + 1e-5)
    np.testing.assert_allclose(normalised, expected, rtol=1e-5, atol=1e-5)


class TinyEncoder(nn.Module):
    """BatchNorm-free, so shuffle BN changes nothing and 8 devices must equal 1."""

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.relu(nn.Conv(4, (3, 3))(images))
        return jnp.mean(x, axis=(1, 2))


SETTINGS = moco.moco_preset("v2", queue_size=32, embedding_dim=6, momentum=0.9)
VIEWS = SETTINGS.view_settings((8, 8))


def tiny_model():
    return ContrastiveModel(TinyEncoder(), moco.projection_head(SETTINGS, hidden_dim=8))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)


def initial_state(model=None):
    return moco.create_train_state(jax.random.key(0), model or tiny_model(), optax.sgd(0.5, momentum=0.9),
                                   (8, 8, 1), SETTINGS, global_batch=16)


class TinyBatchNormEncoder(nn.Module):
    """Convolution, split BatchNorm (statistics per slice of batch/bn_splits examples), ReLU, pool."""

    bn_splits: int = 1

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.Conv(4, (3, 3))(images)
        x = BatchNorm(use_running_average=not train, momentum=0.9, num_splits=self.bn_splits)(x)
        return jnp.mean(nn.relu(x), axis=(1, 2))


def run(devices, impl, images, steps=2, model=None):
    parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
    step = parallel.step(functools.partial(moco.train_step, settings=SETTINGS, view_settings=VIEWS),
                         donate=False)
    states, losses = [initial_state(model)], []
    for _ in range(steps):
        state, metrics = step(parallel.put_state(states[-1]), parallel.put_batch({"image": images}))
        states.append(jax.device_get(parallel.get_state(state)))
        losses.append(float(np.ravel(metrics["loss"])[0]))
    return np.array(losses), states


@pytest.fixture(scope="module")
def one_device(images):
    return run(1, "shard_map", images)


def test_first_step_matches_an_independent_computation(images, one_device):
    losses, (state0, state1, state2) = one_device
    model = tiny_model()
    view_key, _ = jax.random.split(jax.random.fold_in(state0.rng, 0))
    query_views, key_views = jax.jit(simclr_views, static_argnums=2)(view_key, images, VIEWS)
    project = jax.jit(model.apply)
    keys = project({"params": state0.params}, key_views)  # θk = θq at step 0
    queries = project({"params": state0.params}, query_views)
    expected_loss = jax.jit(info_nce)(queries, keys, state0.extra["queue"], SETTINGS.temperature)
    np.testing.assert_allclose(losses[0], expected_loss, rtol=1e-5)
    queue = np.asarray(state1.extra["queue"])
    np.testing.assert_allclose(queue[:16], l2_normalize(keys), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(queue[16:], state0.extra["queue"][16:])
    assert int(state1.extra["queue_pointer"]) == 16 and int(state2.extra["queue_pointer"]) == 0
    # Step 2 moves θk toward the query encoder of step 1: θk = m·θq(0) + (1 − m)·θq(1).
    expected_key_params = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, state0.params, state1.params)
    chex.assert_trees_all_close(state2.extra["key_params"], expected_key_params, rtol=1e-6, atol=1e-7)


def test_eight_devices_equal_one_device(images, one_device):
    """BN-free encoder: shuffle BN must not change any key, so 8 devices equal 1 (pmap and shard_map
    give the same numbers for the same step: tests/test_simclr.py)."""
    losses, states = run(DEVICES, "shard_map", images)
    expected_losses, expected_states = one_device
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for state, expected in zip(states[1:], expected_states[1:]):
        chex.assert_trees_all_close(state.params, expected.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(state.extra, expected.extra, rtol=1e-5, atol=1e-6)


def test_split_batchnorm_on_one_device_equals_shuffle_bn_on_eight(images):
    """With BatchNorm, one device cut into 8 BatchNorm groups of 2 examples takes the same steps as
    8 devices of 2 examples each: the shuffled keys land in the same groups, so shuffle BN hides the
    positive key on one device too. Without the split, one device normalises all 16 together."""
    def bn_model(splits):
        return ContrastiveModel(TinyBatchNormEncoder(bn_splits=splits),
                                moco.projection_head(SETTINGS, hidden_dim=8))

    losses, states = run(1, "shard_map", images, model=bn_model(moco.bn_splits(2, 16)))
    expected_losses, expected_states = run(DEVICES, "shard_map", images, model=bn_model(moco.bn_splits(2, 2)))
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for state, expected in zip(states[1:], expected_states[1:]):
        chex.assert_trees_all_close(state.params, expected.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(state.batch_stats, expected.batch_stats, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(state.extra, expected.extra, rtol=1e-5, atol=1e-6)
    whole_batch_losses, _ = run(1, "shard_map", images, model=bn_model(1))
    assert not np.allclose(whole_batch_losses, expected_losses, rtol=1e-3)


def test_bn_splits_from_the_group_size():
    assert moco.bn_splits(32, 256) == 8
    assert moco.bn_splits(0, 256) == moco.bn_splits(32, 32) == moco.bn_splits(64, 32) == 1
    with pytest.raises(UserError, match=r"bn_group_size=24 does not divide the per-device batch 256.*bn_group_size=16"):
        moco.bn_splits(24, 256)
    with pytest.raises(UserError, match="non-negative"):
        moco.bn_splits(-1, 256)


def test_step_rejects_a_queue_the_global_batch_does_not_divide(images):
    parallel = DataParallel(make_mesh(), "shard_map")
    bad = dataclasses.replace(SETTINGS, queue_size=40)
    step = parallel.step(functools.partial(moco.train_step, settings=bad, view_settings=VIEWS))
    with pytest.raises(UserError, match="queue_size=40"):
        step(parallel.put_state(initial_state()), parallel.put_batch({"image": images}))
