"""Weighted kNN against a NumPy float64 reference."""

import numpy as np
import pytest

from visionax import evaluate


def knn_reference(train, train_labels, test, num_classes, k, temperature):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    scores = np.zeros((len(test), num_classes))
    for row, feature in enumerate(test):
        similarity = train @ feature
        for index in np.argsort(-similarity)[:k]:
            scores[row, train_labels[index]] += np.exp(similarity[index] / temperature)
    return scores


@pytest.mark.parametrize("k", [1, 20, 200])
def test_knn_scores_match_numpy_float64(k):
    rng = np.random.default_rng(0)
    train_labels = rng.integers(0, 5, size=300)
    centres = rng.normal(size=(5, 8))
    train = centres[train_labels] + rng.normal(size=(300, 8))
    test_labels = rng.integers(0, 5, size=70)
    test = centres[test_labels] + rng.normal(size=(70, 8))
    scores = evaluate.knn_scores(train, train_labels, test, 5, k=k, temperature=0.1, chunk_size=32)
    expected = knn_reference(train, train_labels, test, 5, k, 0.1)
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    accuracy = evaluate.knn_accuracy(train, train_labels, test, test_labels, 5, k=k)
    assert accuracy == np.mean(np.argmax(expected, axis=1) == test_labels)
    assert accuracy > 0.5
