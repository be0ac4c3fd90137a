"""Batches gathered on the devices (`config.data.on_device`) are the host's batches, step by step and
across epochs, under shard_map and pmap; a run fed that way reads no host batch and ends with the
parameters of a host-fed run, resumed or not; what cannot be gathered on the devices is one line."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tests.train.test_loop import RecordingBatches, fit, linear_regression_setup
from visionax import parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.errors import UserError
from visionax.train import feed, setup


@flax.struct.dataclass
class Counter:
    step: jax.Array


def reveal_batch(state, batch):
    """A per-device step whose metrics are the whole global batch its devices gathered."""
    gathered = {key: jax.lax.all_gather(value, parallel.DATA_AXIS, tiled=True) for key, value in batch.items()}
    return Counter(state.step + 1), gathered


def small_batches() -> Batches:
    generator = np.random.default_rng(1)
    source = ArraySource(generator.integers(0, 256, (72, 3, 3, 2), dtype=np.uint8),
                         generator.integers(0, 10, 72).astype(np.int32))
    return Batches(source, 16, seed=3)  # 4 steps per epoch, 8 examples left out of each


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_the_devices_gather_the_hosts_batches(impl):
    batches = small_batches()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), impl)
    on_device = feed.DeviceFeed(batches, data_parallel).step(reveal_batch, donate=False)
    on_host = feed.HostFeed(batches, data_parallel).step(reveal_batch, donate=False)
    for step in (0, 1, 3, 4, 6, 9):  # epochs 0, 1 and 2
        state = data_parallel.put_state(Counter(jnp.asarray(step, jnp.int32)))
        expected = batches.host_batch(step)
        for fed_step in (on_device, on_host):
            counter, gathered = fed_step(state, step)
            gathered = data_parallel.get_state(gathered)
            np.testing.assert_array_equal(gathered["image"], expected["image"])
            np.testing.assert_array_equal(gathered["label"], expected["label"])
            assert int(data_parallel.get_state(counter).step) == step + 1
    assert not np.array_equal(batches.indices(0), batches.indices(4))  # a new order each epoch


def on_device_config():
    return {"data": ml_collections.ConfigDict({"on_device": True})}


def test_a_run_fed_on_the_devices_reads_no_host_batch_and_ends_as_a_host_fed_run(tmp_path):
    host_fed, read = fit(tmp_path / "host", 9)
    assert read == list(range(9))
    device_fed, read = fit(tmp_path / "device", 9, **on_device_config())
    assert read == []  # no batch was made on the host
    np.testing.assert_array_equal(np.asarray(device_fed.params["w"]), np.asarray(host_fed.params["w"]))
    fit(tmp_path / "resumed", 5, **on_device_config())
    resumed, read = fit(tmp_path / "resumed", 9, **on_device_config())  # from step 5, mid-epoch 1
    assert read == []
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(host_fed.params["w"]))


def test_batches_that_are_not_an_image_split_in_memory_are_a_user_error(tmp_path, digits_dir):
    config = ml_collections.ConfigDict(on_device_config())

    class TextStreams:
        def host_batch(self, step):
            return {"tokens": np.zeros((8, 4), np.int32)}

    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    with pytest.raises(UserError, match=r"this experiment's batches \(TextStreams\) are not one: drop "
                                        "--config.data.on_device"):
        feed.feed(config, TextStreams(), data_parallel)
    state, step, batches = linear_regression_setup()
    record_by_record = RecordingBatches(list(batches.source[index] for index in range(len(batches.source))), 16, 0)
    with pytest.raises(UserError, match="needs the training split in memory"):
        fit(tmp_path / "records", 2, setup=(state, step, record_by_record), **on_device_config())
    assert not (tmp_path / "records").exists()  # refused before the workdir was touched
    run_config = ml_collections.ConfigDict(
        {"parallel": "shard_map", "batch_size": 64, "seed": 0,
         "data": {"name": "digits", "data_dir": digits_dir, "in_memory_mb": 0.0, "on_device": True}})
    with pytest.raises(UserError, match=r"larger than data.in_memory_mb=0.0: raise --config.data.in_memory_mb"):
        setup.setup(run_config)
