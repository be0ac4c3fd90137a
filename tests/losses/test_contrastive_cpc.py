"""cpc_info_nce and cpc_accuracy: an explicit-loop NumPy float64 reference (value and centred finite
differences), closed forms, and 8 fake devices (shard_map and pmap) against 1 device."""

import functools

import jax
import numpy as np
import pytest

from tests.losses.test_contrastive import (
    DEVICES,
    assert_relative_close,
    numpy_grad,
    sharded,
)
from visionax.losses import cpc_accuracy, cpc_info_nce
from visionax.parallel import DATA_AXIS

STEPS, ROWS, COLS, DIM = 2, 3, 2, 3


def cpc_reference(predictions, targets):
    """Oord et al.'s InfoNCE written out: for every image n, step k, row t with a row t + k below and
    column j, the positive is z[n, t + k, j]; the denominator loops over every patch of every image."""
    predictions, targets = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    images, steps, rows, cols, _ = predictions.shape
    losses = []
    for n in range(images):
        for k in range(1, steps + 1):
            for t in range(rows - k):
                for j in range(cols):
                    p = predictions[n, k - 1, t, j]
                    denominator = 0.0
                    for m in range(images):
                        for u in range(rows):
                            for v in range(cols):
                                denominator += np.exp(p @ targets[m, u, v])
                    losses.append(-(p @ targets[n, t + k, j] - np.log(denominator)))
    return np.mean(losses)


def cpc_accuracy_reference(predictions, targets):
    predictions, targets = np.asarray(predictions, np.float64), np.asarray(targets, np.float64)
    images, steps, rows, cols, _ = predictions.shape
    hits = []
    for n in range(images):
        for k in range(1, steps + 1):
            for t in range(rows - k):
                for j in range(cols):
                    p = predictions[n, k - 1, t, j]
                    positive = p @ targets[n, t + k, j]
                    others = [p @ targets[m, u, v] for m in range(images) for u in range(rows)
                              for v in range(cols) if (m, u, v) != (n, t + k, j)]
                    hits.append(positive > max(others))
    return np.mean(hits)


def make_inputs(images=DEVICES, seed=0, dim=DIM):
    """Targets z and predictions near the right patch (so the accuracy is neither 0 nor 1)."""
    rng = np.random.default_rng(seed)
    targets = rng.normal(size=(images, ROWS, COLS, dim)).astype(np.float32)
    shifted = np.stack([np.roll(targets, -k, axis=1) for k in range(1, STEPS + 1)], axis=1)
    predictions = (shifted + 0.8 * rng.normal(size=shifted.shape)).astype(np.float32)
    return predictions, targets


@functools.cache
def reference_grads():
    """Finite-difference gradients of the float64 reference at `make_inputs()` (computed once)."""
    return numpy_grad(cpc_reference, list(make_inputs()))


def test_single_device_matches_numpy():
    predictions, targets = make_inputs()
    value, grads = jax.value_and_grad(cpc_info_nce, argnums=(0, 1))(predictions, targets)
    assert_relative_close(value, cpc_reference(predictions, targets))
    for grad, expected in zip(grads, reference_grads()):
        assert_relative_close(grad, expected)
    # predictions of rows without a target (t ≥ rows − k) get no gradient
    assert np.all(np.asarray(grads[0])[:, 0, ROWS - 1:] == 0)
    assert np.all(np.asarray(grads[0])[:, 1, ROWS - 2:] == 0)
    assert np.any(np.asarray(grads[0])[:, 1, : ROWS - 2] != 0)


def test_accuracy_matches_numpy():
    predictions, targets = make_inputs(16, seed=1, dim=8)
    expected = cpc_accuracy_reference(predictions, targets)
    assert 0.2 < expected < 0.9
    assert_relative_close(cpc_accuracy(predictions, targets), expected, rtol=1e-7)
    values, _ = sharded(lambda p, z: (cpc_accuracy(p, z, DATA_AXIS), []), "shard_map", predictions, targets)
    assert_relative_close(values, np.full(DEVICES, expected), rtol=1e-7)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_sharded_equals_full_batch_and_numpy(impl):
    """One image per device: every device returns the global loss, and its gradient with respect to its
    own image divided by the device count (the module's convention) is the full-batch gradient."""
    predictions, targets = make_inputs()
    values, grads = sharded(
        lambda p, z: jax.value_and_grad(cpc_info_nce, argnums=(0, 1))(p, z, DATA_AXIS), impl,
        predictions, targets)
    full_value, full_grads = jax.value_and_grad(cpc_info_nce, argnums=(0, 1))(predictions, targets)
    assert_relative_close(values, np.full(DEVICES, cpc_reference(predictions, targets)))
    assert_relative_close(values, np.full(DEVICES, full_value))
    for grad, full_grad, expected in zip(grads, full_grads, reference_grads()):
        assert_relative_close(grad / DEVICES, full_grad)
        assert_relative_close(grad / DEVICES, expected)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_sharded_two_images_per_device_equals_full_batch(impl):
    predictions, targets = make_inputs(2 * DEVICES, seed=2)
    values, grads = sharded(
        lambda p, z: jax.value_and_grad(cpc_info_nce, argnums=(0, 1))(p, z, DATA_AXIS), impl,
        predictions, targets)
    full_value, full_grads = jax.value_and_grad(cpc_info_nce, argnums=(0, 1))(predictions, targets)
    assert_relative_close(values, np.full(DEVICES, cpc_reference(predictions, targets)))
    assert_relative_close(values, np.full(DEVICES, full_value))
    for grad, full_grad in zip(grads, full_grads):
        assert_relative_close(grad / DEVICES, full_grad)


@pytest.mark.parametrize("impl", ["single", "shard_map"])
def test_identical_patches_lose_log_of_global_patch_count(impl):
    """Every patch and prediction the same vector: all scores are equal, so each prediction loses
    ln(N·rows·cols) with N the GLOBAL batch (16 images: ln 96), not ln of one device's 12 patches."""
    predictions = np.full((16, STEPS, ROWS, COLS, DIM), 0.3, np.float32)
    targets = np.full((16, ROWS, COLS, DIM), -0.7, np.float32)
    if impl == "single":
        values = cpc_info_nce(predictions, targets)
    else:
        values, _ = sharded(lambda p, z: (cpc_info_nce(p, z, DATA_AXIS), []), impl, predictions, targets)
    assert_relative_close(values, np.full(np.shape(values), np.log(16 * ROWS * COLS)), rtol=1e-6)


def test_orthogonal_patches_closed_form():
    """Each patch its own axis and every prediction 5× its positive: the positive scores 5, the 23
    other patches 0, so each prediction loses log(1 + 23·e^−5), whatever the rows it looks ahead."""
    images = 4
    targets = np.eye(images * ROWS * COLS, dtype=np.float32).reshape(images, ROWS, COLS, -1)
    predictions = np.stack([5.0 * np.roll(targets, -k, axis=1) for k in range(1, STEPS + 1)], axis=1)
    expected = np.log1p((images * ROWS * COLS - 1) * np.exp(-5.0))
    assert_relative_close(cpc_info_nce(predictions, targets), expected, rtol=1e-6)
    assert float(cpc_accuracy(predictions, targets)) == 1.0


def test_too_few_rows_is_an_error():
    with pytest.raises(ValueError, match="more than 3 rows"):
        cpc_info_nce(np.zeros((2, 3, 3, 2, 4)), np.zeros((2, 3, 2, 4)))
