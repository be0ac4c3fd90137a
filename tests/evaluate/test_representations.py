"""Representation scores: the pixel baseline's centring, the kNN monitor equal to kNN on the
features computed directly, and the scores equal to the kNN and probe functions."""

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax import evaluate, parallel
from visionax.data.pipeline import ArraySource
from visionax.data.preprocess import model_input
from visionax.data.subsets import stratified_fraction


class Flatten(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(4)(x.reshape(x.shape[0], -1))


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=96)
    images = (rng.integers(0, 60, size=(96, 4, 4, 1)) + 60 * labels[:, None, None, None]).astype(np.uint8)
    return ArraySource(images[:64], labels[:64].astype(np.int32)), ArraySource(images[64:], labels[64:].astype(np.int32))


def test_pixel_features_are_model_input_minus_each_images_mean(splits):
    train, _ = splits
    features = evaluate.pixel_features(train.images)
    flat = train.images.reshape(64, -1).astype(np.float64) / 255.0
    np.testing.assert_allclose(features, flat - flat.mean(axis=1, keepdims=True), atol=1e-6)
    # the cosine of two centred images is their Pearson correlation
    a, b = features[0], features[1]
    np.testing.assert_allclose(a @ b / np.linalg.norm(a) / np.linalg.norm(b), np.corrcoef(flat[0], flat[1])[0, 1],
                               rtol=0, atol=1e-6)


def test_monitor_and_scores_equal_the_direct_computation(splits):
    train, test = splits
    model = Flatten()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    embed = functools.partial(lambda variables, images: model.apply(variables, model_input(images)))
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    direct = [np.asarray(model.apply(variables, model_input(split.images))) for split in splits]
    mapped = [evaluate.encoder_features(data_parallel, embed, variables, split.images, 16) for split in splits]
    np.testing.assert_allclose(mapped[0], direct[0], rtol=1e-5, atol=1e-6)
    monitor = evaluate.knn_monitor(data_parallel, embed, train, test, 3, 16)
    state = types.SimpleNamespace(variables=variables)
    expected_knn = evaluate.knn_accuracy(direct[0], train.labels, direct[1], test.labels, 3)
    assert monitor(state, 0) == {"knn_accuracy": pytest.approx(expected_knn)}
    scores = evaluate.feature_scores(direct[0], direct[1], train, test, 3)
    assert scores["knn_accuracy"] == pytest.approx(expected_knn)
    probe, _ = evaluate.linear_probe(direct[0], train.labels, direct[1], test.labels, 3)
    assert scores["probe_accuracy"] == pytest.approx(probe)



def test_label_efficiency_scores_each_share_of_the_labels_on_its_stratified_subset(splits):
    """With 1% of 64 labels: one example of each of the 3 classes; with 50%: half of each class, the
    examples of the smaller share among them (nested); 100%: every example."""
    train, test = splits
    rng = np.random.default_rng(1)
    train_features, test_features = rng.normal(size=(64, 5)), rng.normal(size=(32, 5))
    scores = evaluate.label_efficiency(train_features, test_features, train, test, 3, seed=4,
                                       fractions=(1.0, 0.5, 0.01))
    assert list(scores) == ["100%", "50%", "1%"]
    assert scores["100%"] == evaluate.feature_scores(train_features, test_features, train, test, 3)
    counts = np.bincount(train.labels, minlength=3)
    one = np.array([np.flatnonzero(train.labels == label)[np.random.default_rng([4, 0, label]).permutation(count)[0]]
                    for label, count in enumerate(counts)])
    np.testing.assert_array_equal(np.sort(one), stratified_fraction(train.labels, 0.01, 4))
    expected = evaluate.feature_scores(train_features[np.sort(one)], test_features,
                                       ArraySource(train.images[np.sort(one)], train.labels[np.sort(one)]), test, 3)
    assert scores["1%"] == expected
    # kNN over the three labelled examples: each test point takes the label of its most similar one, mostly
    unit = train_features[np.sort(one)] / np.linalg.norm(train_features[np.sort(one)], axis=1, keepdims=True)
    nearest = train.labels[np.sort(one)][np.argmax(test_features @ unit.T, axis=1)]
    weights = np.exp(test_features @ unit.T / np.linalg.norm(test_features, axis=1, keepdims=True) / 0.1)
    votes = np.stack([weights[:, train.labels[np.sort(one)] == c].sum(axis=1) for c in range(3)], axis=1)
    np.testing.assert_array_equal(np.argmax(votes, axis=1), nearest)
    assert scores["1%"]["knn_accuracy"] == pytest.approx(np.mean(nearest == test.labels))
    half = stratified_fraction(train.labels, 0.5, 4)
    np.testing.assert_array_equal(np.bincount(train.labels[half], minlength=3), np.maximum(1, np.round(0.5 * counts)))
    assert set(np.sort(one)) <= set(half)
