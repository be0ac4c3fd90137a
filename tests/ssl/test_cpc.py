"""CPC: the patch grid against NumPy slicing, the causality of both context networks (exact zeros in
the Jacobian), and the step on 8 devices (shard_map and pmap) against 1 device, in float64 as
test_simclr explains."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.ssl.tiny import float64_state
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.losses import cpc_accuracy, cpc_info_nce
from visionax.parallel import DataParallel, make_mesh
from visionax.ssl import cpc


def patch_grid_reference(images, patch_size, stride):
    batch, height, width, channels = images.shape
    rows, cols = (height - patch_size) // stride + 1, (width - patch_size) // stride + 1
    out = np.zeros((batch, rows, cols, patch_size, patch_size, channels), images.dtype)
    for t in range(rows):
        for j in range(cols):
            out[:, t, j] = images[:, t * stride: t * stride + patch_size, j * stride: j * stride + patch_size]
    return out


@pytest.mark.parametrize("shape, patch_size, stride", [
    ((2, 8, 8, 1), 4, 2),  # 50% overlap: 3 × 3 patches
    ((3, 9, 12, 3), 4, 2),  # a pixel row left over at the bottom, more columns than rows
    ((2, 8, 8, 2), 4, 4),  # no overlap
    ((1, 7, 7, 1), 3, 1),
])
def test_patch_grid_equals_numpy_slicing(shape, patch_size, stride):
    images = np.random.default_rng(0).integers(0, 256, size=shape).astype(np.uint8)
    patches = cpc.patch_grid(jnp.asarray(images), patch_size, stride)
    np.testing.assert_array_equal(np.asarray(patches), patch_grid_reference(images, patch_size, stride))


def test_patch_grid_shape_errors():
    with pytest.raises(ValueError, match="do not fit"):
        cpc.patch_grid(jnp.zeros((1, 4, 4, 1)), 5, 2)


def context_dependencies(context, rows=4, cols=3, dim=3):
    """`dependencies[t, u]` = Σ |∂c_t / ∂z_u| over columns and features, for random z."""
    z = jax.random.normal(jax.random.key(0), (1, rows, cols, dim))
    variables = context.init(jax.random.key(1), z)
    jacobian = jax.jit(jax.jacobian(lambda x: context.apply(variables, x)))(z)  # [1, rows, cols, F, 1, rows, cols, dim]
    return np.asarray(jnp.sum(jnp.abs(jacobian), axis=(0, 2, 3, 4, 6, 7)))


@pytest.mark.parametrize("context", [
    cpc.RowCausalContext(features=5, layers=3, kernel_rows=2, kernel_cols=3),  # receptive field 4 rows
    cpc.RowCausalContext(features=5, layers=1, kernel_rows=4, kernel_cols=1),
    cpc.ColumnGRUContext(features=5),
], ids=["conv", "conv_tall_kernel", "gru"])
def test_context_row_t_sees_rows_up_to_t_only(context):
    dependencies = context_dependencies(context)
    rows = dependencies.shape[0]
    for t in range(rows):
        assert np.all(dependencies[t, t + 1:] == 0.0), f"row {t} depends on rows below it"
        assert np.all(dependencies[t, : t + 1] > 0.0), f"row {t} misses a row above it"


def test_conv_context_mixes_columns_and_gru_does_not():
    z = jax.random.normal(jax.random.key(0), (1, 3, 3, 2))
    for context, mixes in [(cpc.RowCausalContext(features=4), True), (cpc.ColumnGRUContext(features=4), False)]:
        variables = context.init(jax.random.key(1), z)
        row_2_column_0 = functools.partial(lambda x, c, v: c.apply(v, x)[0, 2, 0], c=context, v=variables)
        jacobian = jax.jit(jax.jacobian(row_2_column_0))(z)
        assert (np.max(np.abs(np.asarray(jacobian[:, :, 0, 1, :]))) > 0) == mixes  # row 0, column 1


class TinyPatchEncoder(nn.Module):
    """3×3 convolution, ReLU, global average pool, Dense to 5 features: patches `[n, p, p, c]` → `[n, 5]`."""

    @nn.compact
    def __call__(self, patches, train=False):
        x = nn.relu(nn.Conv(4, (3, 3))(patches))
        return nn.Dense(5)(jnp.mean(x, axis=(1, 2)))


SETTINGS = cpc.CPCSettings(patch_size=4, stride=2, prediction_steps=2, context_features=6)


def tiny_model():
    return cpc.cpc_model(SETTINGS, TinyPatchEncoder())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)


def run(devices, impl, images, steps=2):
    with jax.enable_x64(True):
        state = float64_state(tiny_model())
        data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
        step = data_parallel.step(cpc.train_step)
        initial_params = jax.device_get(state.params)
        state = data_parallel.put_state(state)
        metrics = []
        for _ in range(steps):
            state, step_metrics = step(state, data_parallel.put_batch({"image": images}))
            metrics.append({name: float(np.ravel(value)[0]) for name, value in step_metrics.items()})
        return metrics, jax.device_get(data_parallel.get_state(state)), initial_params


@pytest.fixture(scope="module")
def one_device(images):
    return run(1, "shard_map", images)


def test_step_metrics_are_the_loss_and_accuracy_of_the_model(images, one_device):
    """Step 0's metrics equal cpc_info_nce and cpc_accuracy of the initial model's predictions on the
    whole batch; the loss starts near ln(16·3·3) = ln 144 (near-random embeddings). rtol 1e-9: the
    compiled step and the eager ops agree to ~2e-11 in float64 under jax 0.12 (fused exp/log)."""
    metrics, _, initial_params = one_device
    with jax.enable_x64(True):
        predictions, embeddings = tiny_model().apply({"params": initial_params}, model_input(images))
        expected_loss = float(cpc_info_nce(predictions, embeddings))
        expected_accuracy = float(cpc_accuracy(predictions, embeddings))
    np.testing.assert_allclose(metrics[0]["loss"], expected_loss, rtol=1e-9)
    np.testing.assert_allclose(metrics[0]["accuracy"], expected_accuracy, rtol=1e-12)
    assert abs(metrics[0]["loss"] - np.log(144)) < 0.5
    assert metrics[1]["loss"] < metrics[0]["loss"]


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_equal_one_device(images, one_device, impl):
    metrics, state, initial_params = run(8, impl, images)
    expected_metrics, expected_state, _ = one_device
    for got, expected in zip(metrics, expected_metrics):
        np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-10)
        np.testing.assert_allclose(got["accuracy"], expected["accuracy"], rtol=1e-12)
    assert jax.tree.leaves(state.params)[0].dtype == np.float64
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.params, initial_params)
    assert min(jax.tree.leaves(moved)) > 0
    chex.assert_trees_all_close(state.params, expected_state.params, rtol=1e-10, atol=1e-12)
    assert int(state.step) == 2


def test_embed_is_mean_patch_embedding(images):
    model = tiny_model()
    variables = model.init(jax.random.key(2), jnp.zeros((1, 8, 8, 1)))
    features = cpc.embed(model, variables, images)
    patches = patch_grid_reference(images.astype(np.float32) / 255.0, 4, 2).reshape(-1, 4, 4, 1)
    per_patch = TinyPatchEncoder().apply({"params": variables["params"]["encoder"]}, patches)
    chex.assert_trees_all_close(features, np.asarray(per_patch).reshape(16, 9, 5).mean(axis=1), rtol=1e-5)


def test_settings_errors_name_the_fix():
    SETTINGS.check_image_size(8, 8)  # 3 patch rows predict 2 ahead
    with pytest.raises(UserError, match="prediction_steps"):
        cpc.CPCSettings(patch_size=4, stride=2, prediction_steps=3).check_image_size(8, 8)
    with pytest.raises(UserError, match="patch_size=16"):
        cpc.CPCSettings(patch_size=16).check_image_size(8, 8)
    with pytest.raises(UserError, match="context"):
        cpc.CPCSettings(context="lstm")
