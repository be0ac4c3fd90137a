"""Accuracy and the mean cross-entropy of logits against NumPy float64."""

import numpy as np
import pytest

from visionax import evaluate


def test_accuracy_and_loss_match_numpy():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 7)) * 3
    labels = rng.integers(0, 7, size=50)
    metrics = evaluate.classification_metrics(logits.astype(np.float32), labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(metrics["loss"], -log_probabilities[np.arange(50), labels].mean(), rtol=1e-6)
    assert metrics["accuracy"] == pytest.approx(np.mean(logits.argmax(axis=1) == labels))
    assert 0 < metrics["accuracy"] < 1
    assert float(evaluate.accuracy(np.eye(3), np.array([0, 1, 0]))) == pytest.approx(2 / 3)
