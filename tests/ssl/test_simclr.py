"""SimCLR step: 8 devices (shard_map and pmap) equal 1 device on the full batch.

The comparison runs in float64: float32 agrees only to about 1e-5 of a step's update (summation order
of the synchronised BatchNorm and of the gathered loss), float64 to about 1e-15, so any real
difference between the sharded and the single-device step would show.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.ssl.tiny import TinyEncoder, float64_state
from visionax.data.augment import ViewSettings
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl import simclr
from visionax.ssl.heads import ContrastiveModel, ProjectionHead, embed
from visionax.train.state import create_train_state


def tiny_model(dtype=jnp.float32):
    return ContrastiveModel(TinyEncoder(), ProjectionHead(hidden_dim=8, output_dim=6, num_layers=2,
                                                          bn_axis_name=DATA_AXIS, dtype=dtype))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)


def run(devices, impl, images, steps=2):
    with jax.enable_x64(True):
        state = float64_state(tiny_model(jnp.float64))
        data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
        step = data_parallel.step(functools.partial(
            simclr.train_step, settings=simclr.SimCLRSettings(temperature=0.5),
            view_settings=ViewSettings(output_size=(8, 8))))
        initial_params = jax.device_get(state.params)
        state = data_parallel.put_state(state)
        losses = []
        for _ in range(steps):
            state, metrics = step(state, data_parallel.put_batch({"image": images}))
            losses.append(float(np.ravel(metrics["loss"])[0]))
        return np.array(losses), jax.device_get(data_parallel.get_state(state)), initial_params


@pytest.fixture(scope="module")
def one_device(images):
    return run(1, "shard_map", images)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_equal_one_device(images, one_device, impl):
    losses, state, _ = run(8, impl, images)
    expected_losses, expected_state, _ = one_device
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10)
    assert losses[1] != losses[0]
    assert jax.tree.leaves(state.params)[0].dtype == np.float64
    chex.assert_trees_all_close(state.params, expected_state.params, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(state.batch_stats, expected_state.batch_stats, rtol=1e-10, atol=1e-12)
    assert int(state.step) == 2


def test_parameters_move_and_loss_near_log_of_negatives(one_device):
    losses, state, initial_params = one_device
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.params, initial_params)
    assert min(jax.tree.leaves(moved)) > 0
    # 2N − 1 = 31 candidates per anchor: the loss starts near log(31) for near-random projections.
    assert abs(losses[0] - np.log(31)) < 0.5


def test_embed_is_encoder_features_of_scaled_images(images):
    model = tiny_model()
    state = create_train_state(jax.random.key(1), model, optax.sgd(0.1), (8, 8, 1))
    features = embed(model, state.variables, images)
    encoder_variables = {"params": state.params["encoder"], "batch_stats": state.batch_stats["encoder"]}
    expected = TinyEncoder().apply(encoder_variables, images.astype(np.float32) / 255.0)
    chex.assert_shape(features, (16, 4))
    chex.assert_trees_all_close(features, expected, rtol=1e-6)
