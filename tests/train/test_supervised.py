"""The supervised step against an independent computation of the same update: the loss (softmax or
SVM plus the masked L2 penalty) and its gradient, the model input convention, crop + flip + cutout
from per-example keys (so 8 devices equal 1), mixup within each device, the Polyak average."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax import optim, parallel
from visionax.data.augment import horizontal_flip, random_crop
from visionax.data.preprocess import MeanImage, model_input
from visionax.errors import UserError
from visionax.layers.regularize import cutout, mixup
from visionax.train import supervised
from visionax.train.state import AveragedTrainState, create_train_state


class Linear(nn.Module):
    """s = x W + b on the flattened input (params "W" and "b", so the L2 penalty sees W only)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1)
        return x @ self.param("W", nn.initializers.normal(0.1), (x.shape[-1], 5)) + self.param(
            "b", nn.initializers.normal(0.1), (5,))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 256, (16, 6, 6, 1), dtype=np.uint8),
            "label": rng.integers(0, 5, (16,)).astype(np.int32)}


def one_step(settings, batch, devices=1, impl="shard_map", preprocessing=None, state_class=None):
    data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]), impl)
    kwargs = {}
    if state_class is AveragedTrainState:
        averager = optim.polyak_average(settings.polyak_decay)
        kwargs = dict(state_class=state_class, fields=lambda v, _: {"average": averager.init(v["params"])})
    state = create_train_state(jax.random.PRNGKey(0), Linear(), optax.sgd(0.1), (6, 6, 1), **kwargs)
    step = data_parallel.step(functools.partial(supervised.train_step, settings=settings,
                                                preprocessing=preprocessing), donate=False)
    new_state, metrics = step(data_parallel.put_state(state), data_parallel.put_batch(batch))
    return state, jax.device_get(data_parallel.get_state(new_state)), jax.device_get(data_parallel.get_state(metrics))


def numpy_loss(params, x, labels, settings):
    """The loss in NumPy float64: data loss + λ Σ W² (the bias is not penalised)."""
    scores = x.reshape(len(x), -1) @ params["W"] + params["b"]
    if settings.loss == "softmax":
        shifted = scores - scores.max(1, keepdims=True)
        log_probabilities = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        data = -log_probabilities[np.arange(len(x)), labels].mean()
    else:
        correct = scores[np.arange(len(x)), labels][:, None]
        margins = np.maximum(0, scores - correct + settings.svm_margin)
        margins[np.arange(len(x)), labels] = 0
        data = margins.sum(1).mean()
    return data + settings.l2_penalty * np.sum(params["W"] ** 2)


@pytest.mark.parametrize("loss", ["softmax", "svm"])
def test_loss_and_update_match_numpy_and_finite_differences(batch, loss):
    settings = supervised.SupervisedSettings(num_classes=5, loss=loss, l2_penalty=0.05)
    state, new_state, metrics = one_step(settings, batch)
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), jax.device_get(state.params))
    x = batch["image"].astype(np.float64) / 255.0  # the model input convention
    np.testing.assert_allclose(metrics["loss"], numpy_loss(params, x, batch["label"], settings), rtol=1e-5)
    # SGD: θ' = θ − 0.1 ∇L, the gradient by centred finite differences of the NumPy loss
    for name in ("W", "b"):
        gradient = np.zeros_like(params[name])
        for index in np.ndindex(params[name].shape):
            shifted = [jax.tree.map(np.copy, params) for _ in range(2)]
            shifted[0][name][index] += 1e-6
            shifted[1][name][index] -= 1e-6
            gradient[index] = (numpy_loss(shifted[0], x, batch["label"], settings)
                               - numpy_loss(shifted[1], x, batch["label"], settings)) / 2e-6
        np.testing.assert_allclose(new_state.params[name], params[name] - 0.1 * gradient, rtol=1e-4, atol=1e-5)
    logits = x.reshape(16, -1) @ params["W"] + params["b"]
    np.testing.assert_allclose(metrics["accuracy"], np.mean(logits.argmax(1) == batch["label"]), atol=1e-6)


def test_preprocessing_is_applied_after_the_model_input(batch):
    mean = np.full((6, 6, 1), 0.5, np.float32)
    settings = supervised.SupervisedSettings(num_classes=5)
    state, _, metrics = one_step(settings, batch, preprocessing=MeanImage(jnp.asarray(mean)).apply)
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), jax.device_get(state.params))
    x = batch["image"].astype(np.float64) / 255.0 - 0.5
    np.testing.assert_allclose(metrics["loss"], numpy_loss(params, x, batch["label"], settings), rtol=1e-5)
    logits = supervised.predict(state.variables, batch["image"], apply_fn=state.apply_fn,
                                preprocessing=MeanImage(jnp.asarray(mean)).apply)
    np.testing.assert_allclose(logits, x.reshape(16, -1) @ params["W"] + params["b"], rtol=1e-5, atol=1e-6)


def test_crop_flip_and_cutout_use_per_example_keys_so_8_devices_equal_1(batch):
    settings = supervised.SupervisedSettings(num_classes=5, crop_padding=2, flip_probability=0.5, cutout_size=3)
    state, one, metrics_one = one_step(settings, batch)
    _, eight, metrics_eight = one_step(settings, batch, devices=8)
    np.testing.assert_allclose(metrics_eight["loss"], metrics_one["loss"], rtol=1e-6)
    chex.assert_trees_all_close(eight.params, one.params, rtol=1e-6, atol=1e-7)
    # the same augmentation by hand: keys fold_in(augment key, example index)
    _, step_rng = jax.random.split(state.rng)
    augment_key, cutout_key, _, _ = jax.random.split(step_rng, 4)
    images = []
    for index, image in enumerate(model_input(batch["image"])):
        crop_key, flip_key = jax.random.split(jax.random.fold_in(augment_key, index))
        image = horizontal_flip(flip_key, random_crop(crop_key, image, 2), 0.5)
        images.append(cutout(image[None], 3, jax.random.fold_in(cutout_key, index))[0])
    x = np.asarray(jnp.stack(images), np.float64)
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), jax.device_get(state.params))
    np.testing.assert_allclose(metrics_one["loss"], numpy_loss(params, x, batch["label"], settings), rtol=1e-5)
    _, _, plain_metrics = one_step(supervised.SupervisedSettings(num_classes=5), batch)
    assert not np.allclose(metrics_one["loss"], plain_metrics["loss"])  # the augmentation did something


def test_mixup_trains_on_mixed_targets(batch):
    """The loss is the cross-entropy against λ y_i + (1 − λ) y_π(i) of the inputs mixed the same way,
    with the device's mixup key fold_in(mixup key, device index)."""
    settings = supervised.SupervisedSettings(num_classes=5, mixup_alpha=0.4)
    state, _, metrics = one_step(settings, batch)
    _, step_rng = jax.random.split(state.rng)
    mixup_key = jax.random.split(step_rng, 4)[2]
    x, targets = mixup(model_input(batch["image"]), jnp.asarray(batch["label"]), jax.random.fold_in(mixup_key, 0),
                       0.4, num_classes=5)
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), jax.device_get(state.params))
    scores = np.asarray(x, np.float64).reshape(16, -1) @ params["W"] + params["b"]
    shifted = scores - scores.max(1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected = -np.mean(np.sum(np.asarray(targets, np.float64) * log_probabilities, axis=1))
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    _, _, plain_metrics = one_step(supervised.SupervisedSettings(num_classes=5), batch)
    assert not np.isclose(metrics["loss"], plain_metrics["loss"])
    with pytest.raises(UserError, match="mixup makes soft targets"):
        supervised.SupervisedSettings(num_classes=5, loss="svm", mixup_alpha=0.2)


def test_polyak_average_follows_the_parameters(batch):
    settings = supervised.SupervisedSettings(num_classes=5, polyak_decay=0.9)
    _, new_state, _ = one_step(settings, batch, state_class=AveragedTrainState)
    # debiased EMA after one update: the average is the new parameters themselves
    chex.assert_trees_all_close(new_state.average.params, new_state.params, rtol=1e-6, atol=1e-8)
    assert int(new_state.average.count) == 1


@pytest.mark.parametrize("change, message", [
    ({"loss": "hinge"}, "unknown loss 'hinge'"),
    ({"l2_penalty": -1.0}, "l2_penalty=-1.0 must be >= 0"),
    ({"flip_probability": 2.0}, "flip_probability=2.0 is not a probability"),
    ({"polyak_decay": 1.0}, r"polyak_decay=1.0 must be in \[0, 1\)"),
])
def test_settings_are_validated(change, message):
    with pytest.raises(UserError, match=message):
        supervised.SupervisedSettings(num_classes=5, **change)
