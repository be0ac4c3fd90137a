"""Rotation prediction: the rotations equal `np.rot90`, the step equals a float64 recomputation of
the loss, the accuracy and one optax update, the views are each example's own, and 8 devices
(shard_map and pmap) equal 1.

Steps run in float64 (as SimCLR's test): float32 agrees only to about 1e-5 of an update (the
summation order of the synchronised BatchNorm), float64 to about 1e-15.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.ssl.pretext.checks import assert_eight_devices_equal_one
from tests.ssl.tiny import TinyEncoder, float64_state
from visionax.data.augment import ViewSettings, augment_view
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl.heads import ContrastiveModel
from visionax.ssl.pretext import rotation

VIEWS = ViewSettings(output_size=(8, 8), area_range=(0.5, 1.0), flip_probability=0.0, jitter_strength=0.5)


def test_rotate_turns_each_image_by_its_own_quarter_turns_like_np_rot90():
    images = np.random.default_rng(0).normal(size=(6, 5, 5, 2)).astype(np.float32)
    quarter_turns = np.array([0, 1, 2, 3, 5, -1])
    expected = np.stack([np.rot90(image, k, axes=(0, 1)) for image, k in zip(images, quarter_turns)])
    np.testing.assert_array_equal(rotate_np(images, quarter_turns), expected)
    # counter-clockwise: a quarter turn brings the top-right corner to the top-left
    square = np.array([[1, 2], [3, 4]])[None, :, :, None]
    np.testing.assert_array_equal(rotate_np(square, np.array([1]))[0, ..., 0], [[2, 4], [1, 3]])


def rotate_np(images, quarter_turns):
    return np.asarray(rotation.rotate(jnp.asarray(images), jnp.asarray(quarter_turns)))


def test_four_quarter_turns_are_the_identity():
    images = np.random.default_rng(1).integers(0, 256, size=(4, 6, 6, 3), dtype=np.uint8)
    turns = np.array([0, 1, 2, 3])
    once = rotate_np(images, np.ones(4, int))
    assert not np.array_equal(once, images)
    four_times = images
    for _ in range(4):
        four_times = rotate_np(four_times, np.ones(4, int))
    np.testing.assert_array_equal(four_times, images)
    np.testing.assert_array_equal(rotate_np(rotate_np(images, turns), 4 - turns), images)


def test_rotation_batch_is_every_image_in_its_four_rotations_labelled_by_quarter_turns():
    images = np.random.default_rng(2).normal(size=(3, 4, 4, 1)).astype(np.float32)
    rotated, labels = map(np.asarray, rotation.rotation_batch(jnp.asarray(images)))
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert labels.dtype == np.int32
    for row, (image, label) in enumerate(zip(rotated, labels)):
        np.testing.assert_array_equal(image, np.rot90(images[row % 3], label, axes=(0, 1)))


def test_non_square_images_are_a_user_error():
    with pytest.raises(UserError, match="rotation prediction needs square images.*6×8"):
        rotation.rotation_batch(jnp.zeros((2, 6, 8, 1)))
    with pytest.raises(UserError, match="needs square images"):
        rotation.check_square((32, 28, 3))


@pytest.mark.parametrize("change, message", [
    ({"head_layers": 0}, "head_layers=0 and head_hidden_dim=128 must be >= 1"),
    ({"head_hidden_dim": 0}, "head_layers=1 and head_hidden_dim=0 must be >= 1"),
])
def test_bad_settings_are_one_line_user_errors(change, message):
    with pytest.raises(UserError, match=message) as error:
        rotation.RotationSettings(**change)
    assert "\n" not in str(error.value)


def test_the_default_head_is_one_linear_layer_with_four_outputs():
    head = rotation.rotation_head(rotation.RotationSettings(), bn_axis_name=None)
    params = head.init(jax.random.key(0), jnp.zeros((1, 5)))["params"]
    assert list(params) == ["Dense_0"] and params["Dense_0"]["kernel"].shape == (5, 4)


def tiny_model(head_layers, bn_axis_name=DATA_AXIS):
    settings = rotation.RotationSettings(head_layers=head_layers, head_hidden_dim=8)
    return ContrastiveModel(TinyEncoder(bn_axis_name),
                            rotation.rotation_head(settings, bn_axis_name=bn_axis_name, dtype=jnp.float64))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)


def run_step(devices, impl, images, *, head_layers=2, view_settings=None, steps=1):
    """`steps` steps of `rotation.train_step` on the first `devices` devices in float64: (metrics of
    each step, final state, initial state)."""
    data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
    step = data_parallel.step(functools.partial(rotation.train_step, view_settings=view_settings), donate=False)
    initial = float64_state(tiny_model(head_layers))
    state, history = data_parallel.put_state(initial), []
    for _ in range(steps):
        state, metrics = step(state, data_parallel.put_batch({"image": images}))
        history.append(jax.device_get(data_parallel.get_state(metrics)))
    return history, jax.device_get(data_parallel.get_state(state)), jax.device_get(initial)


def compiled_model_input(images):
    """x / 255 as a compiled step computes it (XLA multiplies by the float32 1/255, up to one ulp
    from the division that NumPy and eager jax 0.12 do)."""
    return np.asarray(jax.jit(model_input)(images))


def reference_update(initial, inputs, head_layers=2):
    """The loss, the accuracy, the parameters and the statistics after one update, recomputed from
    the float images `inputs` `[n, h, w, c]`: rotations by `np.rot90`, the model with BatchNorm over
    the whole batch (no axis), cross-entropy and accuracy in float64 NumPy, the optax update of the
    gradient of the same cross-entropy."""
    rotated = np.concatenate([np.rot90(inputs, k, axes=(1, 2)) for k in range(4)]).astype(np.float64)
    labels = np.repeat(np.arange(4), len(inputs))
    model = tiny_model(head_layers, bn_axis_name=None)

    def logits_of(params):
        return model.apply({"params": params, "batch_stats": initial.batch_stats}, rotated, train=True,
                           mutable=["batch_stats"])

    (logits, updates) = logits_of(initial.params)
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(len(labels)), labels])
    accuracy = np.mean(np.argmax(logits, 1) == labels)

    def cross_entropy(params):
        return -jnp.mean(jax.nn.log_softmax(logits_of(params)[0])[jnp.arange(len(labels)), labels])

    grads = jax.grad(cross_entropy)(initial.params)
    updates_, _ = initial.tx.update(grads, initial.opt_state, initial.params)
    return loss, accuracy, optax.apply_updates(initial.params, updates_), updates["batch_stats"]


@pytest.mark.parametrize("head_layers", [1, 2])
def test_step_equals_a_float64_recomputation_of_loss_accuracy_and_update(images, head_layers):
    with jax.enable_x64(True):
        (metrics,), state, initial = run_step(1, "shard_map", images, head_layers=head_layers)
        loss, accuracy, params, batch_stats = reference_update(initial, compiled_model_input(images),
                                                               head_layers)
    assert metrics["loss"].dtype == np.float64
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["rotation_accuracy"], accuracy, rtol=1e-12)
    assert 0 < accuracy < 1
    chex.assert_trees_all_close(state.params, params, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(state.batch_stats, batch_stats, rtol=1e-10, atol=1e-14)
    assert int(state.step) == 1


def test_views_are_each_examples_own_then_rotated(images):
    """With views, the step equals the step on views recomputed example by example from the key
    fold_in(fold_in(rng, step), example index)."""
    with jax.enable_x64(True):
        (metrics,), state, initial = run_step(1, "shard_map", images, view_settings=VIEWS)
        step_key = jax.random.fold_in(initial.rng, initial.step)
        view_of = jax.jit(lambda index, image: augment_view(jax.random.fold_in(step_key, index),
                                                            model_input(image), VIEWS))
        views = np.stack([np.asarray(view_of(index, image)) for index, image in enumerate(images)])
        loss, accuracy, params, _ = reference_update(initial, views)
    assert not np.allclose(views, compiled_model_input(images), atol=0.05)
    # the views are float32 images, rounded as the compiler orders their arithmetic inside the step
    # and alone (~1e-7 of a pixel: ~5e-10 of the float64 loss, ~5e-7 of the updated parameters); a
    # view from another key changes the loss in its first digits
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-8)
    np.testing.assert_allclose(metrics["rotation_accuracy"], accuracy, rtol=1e-12)
    chex.assert_trees_all_close(state.params, params, rtol=5e-6, atol=1e-8)


@pytest.fixture(scope="module")
def one_device(images):
    with jax.enable_x64(True):
        return run_step(1, "shard_map", images, view_settings=VIEWS, steps=2)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_equal_one_device(images, one_device, impl):
    """8 devices, 2 different images each (views included), equal 1 device on all 16."""
    with jax.enable_x64(True):
        history, state, _ = run_step(8, impl, images, view_settings=VIEWS, steps=2)
    assert_eight_devices_equal_one(history, state, one_device, "rotation_accuracy")
