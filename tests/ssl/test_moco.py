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

from visionax.data.augment import ViewSettings, simclr_views
from visionax.errors import UserError
from visionax.layers.norm import BatchNorm
from visionax.losses import info_nce
from visionax.losses.contrastive import l2_normalize
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl import moco
from visionax.ssl.heads import ContrastiveModel

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


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


@pytest.mark.parametrize("change, message", [
    ({"temperature": 0.0}, "temperature=0.0 must be positive"),
    ({"momentum": 1.0}, r"key_momentum=1.0 must be in \[0, 1\)"),
    ({"queue_size": 0}, "queue_size=0 must be a positive integer"),
    ({"head_layers": 3}, "head_layers=3"),
])
def test_settings_are_validated_in_one_place(change, message):
    with pytest.raises(UserError, match=message):
        dataclasses.replace(SETTINGS, **change)


def test_head_layers_choose_v1s_linear_or_v2s_mlp_head():
    features = jnp.ones((2, 5))
    for layers, expected in ((1, 1), (2, 2)):
        head = moco.projection_head(dataclasses.replace(SETTINGS, head_layers=layers))
        params = head.init(jax.random.key(0), features)["params"]
        assert len(params) == expected and not any("BatchNorm" in name for name in params)


def test_shuffle_bn_unshuffle_restores_order_and_groups_match_numpy():
    """Shuffle, normalise each device's batch as BatchNorm does, unshuffle: every example comes back
    to its place, normalised with the statistics of the device group it was shuffled into."""
    examples = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    key = jax.random.key(3)

    def per_device(local):
        shuffled, permutation = moco.shuffle_across_devices(key, local, group_size=2)
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


SETTINGS = moco.MoCoSettings(temperature=0.2, momentum=0.9, queue_size=32, head_layers=2, head_hidden_dim=8,
                             projection_dim=6)
# MoCo v2's augmentation: crops of 20-100% of the area, jitter 0.5 with probability 0.8, grayscale, blur
VIEWS = ViewSettings(output_size=(8, 8), area_range=(0.2, 1.0), jitter_strength=0.5, jitter_probability=0.8,
                     grayscale_probability=0.2, blur_probability=0.5)


def tiny_model():
    return ContrastiveModel(TinyEncoder(), moco.projection_head(SETTINGS))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(2).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)


def initial_state(model=None):
    return moco.create_moco_state(jax.random.key(0), model or tiny_model(), optax.sgd(0.5, momentum=0.9),
                                   (8, 8, 1), SETTINGS, global_batch=16)


class TinyBatchNormEncoder(nn.Module):
    """Convolution, split BatchNorm (statistics per slice of batch/bn_splits examples), ReLU, pool."""

    bn_splits: int = 1

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.Conv(4, (3, 3))(images)
        x = BatchNorm(use_running_average=not train, momentum=0.9, num_splits=self.bn_splits)(x)
        return jnp.mean(nn.relu(x), axis=(1, 2))


def run(devices, impl, images, steps=2, model=None, settings=SETTINGS):
    data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
    step = data_parallel.step(functools.partial(moco.train_step, settings=settings, view_settings=VIEWS),
                              donate=False)
    states, losses = [initial_state(model)], []
    for _ in range(steps):
        state, metrics = step(data_parallel.put_state(states[-1]), data_parallel.put_batch({"image": images}))
        states.append(jax.device_get(data_parallel.get_state(state)))
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
    expected_loss = jax.jit(info_nce)(queries, keys, state0.queue.keys, SETTINGS.temperature)
    np.testing.assert_allclose(losses[0], expected_loss, rtol=1e-5)
    queue = np.asarray(state1.queue.keys)
    np.testing.assert_allclose(queue[:16], l2_normalize(keys), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(queue[16:], state0.queue.keys[16:])
    assert int(state1.queue.pointer) == 16 and int(state2.queue.pointer) == 0
    # Step 2 moves θk toward the query encoder of step 1: θk = m·θq(0) + (1 − m)·θq(1).
    expected_key_params = jax.tree.map(lambda a, b: 0.9 * a + 0.1 * b, state0.params, state1.params)
    chex.assert_trees_all_close(state2.key_encoder.params, expected_key_params, rtol=1e-6, atol=1e-7)


def test_eight_devices_equal_one_device(images, one_device):
    """BN-free encoder: shuffle BN must not change any key, so 8 devices equal 1 (pmap and shard_map
    give the same numbers for the same step: tests/test_simclr.py)."""
    losses, states = run(DEVICES, "shard_map", images)
    expected_losses, expected_states = one_device
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for state, expected in zip(states[1:], expected_states[1:]):
        chex.assert_trees_all_close(state.params, expected.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close((state.key_encoder, state.queue), (expected.key_encoder, expected.queue),
                                    rtol=1e-5, atol=1e-6)


def test_split_batchnorm_on_one_device_equals_shuffle_bn_on_eight(images):
    """With BatchNorm, one device cut into 8 BatchNorm groups of 2 examples takes the same steps as
    8 devices of 2 examples each: the shuffled keys land in the same groups, so shuffle BN hides the
    positive key on one device too. Without the split, one device normalises all 16 together."""
    def bn_model(splits):
        return ContrastiveModel(TinyBatchNormEncoder(bn_splits=splits), moco.projection_head(SETTINGS))

    grouped = dataclasses.replace(SETTINGS, bn_group_size=2)
    losses, states = run(1, "shard_map", images, model=bn_model(grouped.bn_splits(16)), settings=grouped)
    expected_losses, expected_states = run(DEVICES, "shard_map", images, model=bn_model(grouped.bn_splits(2)),
                                           settings=grouped)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-5)
    for state, expected in zip(states[1:], expected_states[1:]):
        chex.assert_trees_all_close(state.params, expected.params, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close(state.batch_stats, expected.batch_stats, rtol=1e-5, atol=1e-6)
        chex.assert_trees_all_close((state.key_encoder, state.queue), (expected.key_encoder, expected.queue),
                                    rtol=1e-5, atol=1e-6)
    whole_batch_losses, _ = run(1, "shard_map", images, model=bn_model(1), settings=grouped)
    assert not np.allclose(whole_batch_losses, expected_losses, rtol=1e-3)


def test_bn_splits_from_the_group_size():
    assert moco.bn_splits(32, 256) == 8
    assert moco.bn_splits(0, 256) == moco.bn_splits(32, 32) == moco.bn_splits(64, 32) == 1
    with pytest.raises(UserError, match=r"bn_group_size=24 does not divide the per-device batch 256.*bn_group_size=16"):
        moco.bn_splits(24, 256)
    with pytest.raises(UserError, match="non-negative"):
        dataclasses.replace(SETTINGS, bn_group_size=-1)


def test_step_rejects_a_queue_the_global_batch_does_not_divide(images):
    data_parallel = DataParallel(make_mesh(), "shard_map")
    bad = dataclasses.replace(SETTINGS, queue_size=40)
    step = data_parallel.step(functools.partial(moco.train_step, settings=bad, view_settings=VIEWS))
    with pytest.raises(UserError, match="queue_size=40"):
        step(data_parallel.put_state(initial_state()), data_parallel.put_batch({"image": images}))


@pytest.mark.parametrize("num_examples, group_size", [(16, 2), (16, 4), (256, 32), (12, 6), (8, 1)])
def test_the_shuffle_moves_every_example_out_of_its_batchnorm_group(num_examples, group_size):
    groups = num_examples // group_size
    seen = set()
    for seed in range(20):
        permutation = np.asarray(moco.group_changing_permutation(jax.random.key(seed), num_examples, group_size))
        assert sorted(permutation) == list(range(num_examples))
        slot_group = np.arange(num_examples) // group_size
        example_group = permutation // group_size
        assert np.all(slot_group != example_group)  # no key shares a BatchNorm group with its query
        for group in range(groups):  # each group gets examples from min(g, G − 1) different groups
            sources = set(example_group[slot_group == group])
            assert len(sources) == min(group_size, groups - 1)
        seen.add(tuple(permutation))
    assert len(seen) == 20  # random
    single = np.asarray(moco.group_changing_permutation(jax.random.key(0), 8, 8))
    assert sorted(single) == list(range(8))  # one group: a plain permutation


def bn_model(splits=1):
    return ContrastiveModel(TinyBatchNormEncoder(bn_splits=splits), moco.projection_head(SETTINGS))


@pytest.fixture(scope="module")
def bn_run(images):
    """Two MoCo steps on 8 devices of 2 examples each, BatchNorm per device (shuffle BN)."""
    return run(DEVICES, "shard_map", images, model=bn_model())


def key_views_and_permutation(state, images, step):
    view_key, shuffle_key = jax.random.split(jax.random.fold_in(state.rng, step))
    _, key_views = simclr_views(view_key, images, VIEWS)
    return np.asarray(key_views), np.asarray(moco.group_changing_permutation(shuffle_key, 16, 2))


def keys_in_groups(model, variables, views, groups):
    """Unit keys of `views` with BatchNorm statistics of each group of example indices separately."""
    keys = np.empty((len(views), SETTINGS.projection_dim))
    for group in groups:
        out, _ = model.apply(variables, views[group], train=True, mutable=["batch_stats"])
        keys[group] = np.asarray(l2_normalize(out))
    return keys


def test_keys_are_the_key_encoder_on_the_shuffled_views_in_their_groups(images, bn_run):
    _, (state0, state1, _) = bn_run
    model = bn_model()
    key_views, permutation = key_views_and_permutation(state0, images, 0)
    variables = {"params": state0.params, "batch_stats": state0.key_encoder.batch_stats}  # θk = θq at step 0
    shuffled_groups = [permutation[2 * d: 2 * d + 2] for d in range(DEVICES)]
    expected = keys_in_groups(model, variables, key_views, shuffled_groups)
    np.testing.assert_allclose(state1.queue.keys[:16], expected, rtol=1e-4, atol=1e-5)
    unshuffled = keys_in_groups(model, variables, key_views, [np.arange(2 * d, 2 * d + 2) for d in range(DEVICES)])
    assert not np.allclose(state1.queue.keys[:16], unshuffled, atol=1e-3)


def test_step_two_uses_the_keys_enqueued_at_step_one_as_negatives(images, bn_run):
    losses, (state0, state1, _) = bn_run
    model = bn_model()
    view_key, shuffle_key = jax.random.split(jax.random.fold_in(state1.rng, 1))
    query_views, key_views = simclr_views(view_key, images, VIEWS)
    permutation = np.asarray(moco.group_changing_permutation(shuffle_key, 16, 2))
    key_params = moco.momentum_update(state1.key_encoder.params, state1.params, SETTINGS.momentum)
    keys = keys_in_groups(model, {"params": key_params, "batch_stats": state1.key_encoder.batch_stats},
                          np.asarray(key_views), [permutation[2 * d: 2 * d + 2] for d in range(DEVICES)])
    queries = np.concatenate([
        np.asarray(model.apply(state1.variables, query_views[2 * d: 2 * d + 2], train=True, mutable=["batch_stats"])[0])
        for d in range(DEVICES)])  # each device's query BatchNorm over its own 2 examples
    expected = info_nce(queries, keys, state1.queue.keys, SETTINGS.temperature)
    np.testing.assert_allclose(losses[1], expected, rtol=1e-4)
    with_the_old_queue = info_nce(queries, keys, state0.queue.keys, SETTINGS.temperature)
    assert not np.isclose(losses[1], with_the_old_queue, rtol=1e-3)


def test_key_batchnorm_statistics_follow_the_momentum_rule(images, bn_run):
    """running ← 0.9 · running + 0.1 · mean over the devices of each device's batch statistics of
    the key encoder's BatchNorm input (the convolution of its shuffled key views)."""
    _, (state0, state1, _) = bn_run
    key_views, permutation = key_views_and_permutation(state0, images, 0)
    conv = nn.Conv(4, (3, 3))
    inputs = np.asarray(conv.apply({"params": state0.params["encoder"]["Conv_0"]}, key_views), np.float64)
    groups = [inputs[permutation[2 * d: 2 * d + 2]] for d in range(DEVICES)]
    means = np.mean([group.mean(axis=(0, 1, 2)) for group in groups], axis=0)
    variances = np.mean([group.var(axis=(0, 1, 2)) for group in groups], axis=0)
    before = state0.key_encoder.batch_stats["encoder"]["BatchNorm_0"]
    after = state1.key_encoder.batch_stats["encoder"]["BatchNorm_0"]
    np.testing.assert_allclose(after["mean"], 0.9 * before["mean"] + 0.1 * means, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after["var"], 0.9 * before["var"] + 0.1 * variances, rtol=1e-4, atol=1e-6)
