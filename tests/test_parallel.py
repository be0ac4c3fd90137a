"""shard_map, pmap and one device give the same training run; indivisible batches are clear errors."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax import parallel
from visionax.errors import UserError
from visionax.models.small_cnn import SmallCNN
from visionax.train import supervised
from visionax.train.state import create_train_state

STEPS = 4


def run(impl: str, devices, batches):
    model = SmallCNN(num_classes=10, widths=(8, 16, 16), bn_axis_name=parallel.DATA_AXIS)
    state = create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1, momentum=0.9), (8, 8, 1))
    data_parallel = parallel.DataParallel(parallel.make_mesh(devices), impl)
    step = data_parallel.step(functools.partial(supervised.train_step,
                                                settings=supervised.SupervisedSettings(num_classes=10)))
    state = data_parallel.put_state(state)
    losses = []
    for batch in batches:
        state, metrics = step(state, data_parallel.put_batch(batch))
        losses.append(float(data_parallel.get_state(metrics)["loss"]))
    return data_parallel.get_state(state), np.asarray(losses)


@pytest.fixture(scope="module")
def batches():
    generator = np.random.default_rng(0)
    return [
        {"image": generator.integers(0, 256, (32, 8, 8, 1), dtype=np.uint8),
         "label": generator.integers(0, 10, (32,), dtype=np.int32)}
        for _ in range(STEPS)
    ]


@pytest.fixture(scope="module")
def single_device_run(batches):
    return run("shard_map", jax.devices()[:1], batches)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_match_one_device(impl, batches, single_device_run):
    assert len(jax.devices()) == 8
    reference_state, reference_losses = single_device_run
    state, losses = run(impl, jax.devices(), batches)
    assert len(set(reference_losses.tolist())) == STEPS  # every step changed the parameters
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-6)
    chex.assert_trees_all_close(state.params, reference_state.params, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(state.batch_stats, reference_state.batch_stats, rtol=1e-6, atol=1e-7)
    assert int(state.step) == STEPS


def test_step_compiles_once(batches):
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    calls = []

    def counted(state, batch):
        calls.append(1)
        return {"w": state["w"] + jax.lax.pmean(batch.mean(), parallel.DATA_AXIS)}, {}

    step = data_parallel.step(counted)
    state = data_parallel.put_state({"w": jnp.zeros(())})
    for batch in batches:
        state, _ = step(state, data_parallel.put_batch(batch["image"].astype(np.float32)))
    assert len(calls) == 1
    np.testing.assert_allclose(float(state["w"]), sum(b["image"].mean() for b in batches), rtol=1e-5)


def test_indivisible_batch_is_a_user_error():
    with pytest.raises(UserError, match="batch_size=100 is not divisible by the 8 devices.*multiple of 8"):
        parallel.check_batch_size(100, 8)
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    with pytest.raises(UserError, match="not divisible"):
        data_parallel.put_batch({"image": np.zeros((12, 2), np.float32)})


def test_unknown_parallel_impl_is_a_user_error():
    with pytest.raises(UserError, match="unknown parallel 'xmap'"):
        parallel.DataParallel(parallel.make_mesh(), "xmap")
