"""How good a representation is, measured the same way for every encoder: the weighted kNN
classifier (k = 200, τ = 0.1) and the linear probe on frozen features, for learned features beside
raw pixels and a randomly initialised encoder (the comparison every self-supervised experiment ends
with), both again with 10% and 1% of the training labels (the label-efficiency view that is the point of
self-supervision), and the kNN monitor the training loop calls."""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from visionax.data.pipeline import ArraySource
from visionax.data.subsets import stratified_fraction
from visionax.data.preprocess import model_input
from visionax.evaluate.batches import map_over_batches
from visionax.evaluate.knn import knn_accuracy
from visionax.evaluate.probe import linear_probe
from visionax.parallel import DataParallel

Embed = Callable[[dict, np.ndarray], np.ndarray]  # (variables, uint8 images) -> features, per device

LABEL_FRACTIONS = (1.0, 0.1, 0.01)  # the shares of the training labels every representation is scored with

__all__ = ["LABEL_FRACTIONS", "pixel_features", "encoder_features", "feature_scores", "label_efficiency",
           "fraction_name", "knn_monitor"]


def pixel_features(images: np.ndarray) -> np.ndarray:
    """Raw pixels as features `[n, h·w·c]`: the model input of each image minus its own mean, so
    that their cosine similarity is the Pearson correlation (the data README's 44.2% kNN on CIFAR-10)."""
    flat = np.asarray(model_input(images)).reshape(len(images), -1)
    return flat - flat.mean(axis=1, keepdims=True)


def encoder_features(data_parallel: DataParallel, embed: Embed, variables: dict, images: np.ndarray,
                     batch_size: int) -> np.ndarray:
    """`embed(variables, images)` `[n, features]` computed over the device mesh in batches."""
    return map_over_batches(data_parallel, embed, variables, images, batch_size)


def feature_scores(train_features: np.ndarray, test_features: np.ndarray, train: ArraySource,
                   test: ArraySource, num_classes: int) -> dict[str, float]:
    """`{"knn_accuracy", "probe_accuracy"}` of features of the train and test images."""
    knn = knn_accuracy(train_features, train.labels, test_features, test.labels, num_classes)
    probe, _ = linear_probe(train_features, train.labels, test_features, test.labels, num_classes)
    return {"knn_accuracy": knn, "probe_accuracy": probe}


def fraction_name(fraction: float) -> str:
    """The label share as the tables write it: 1.0 → "100%", 0.01 → "1%"."""
    return f"{fraction:.0%}"


def label_efficiency(train_features: np.ndarray, test_features: np.ndarray, train: ArraySource, test: ArraySource,
                     num_classes: int, seed: int, fractions=LABEL_FRACTIONS) -> dict[str, dict[str, float]]:
    """`{fraction_name(f): feature_scores(...)}` with only the labelled training examples of each share f:
    max(1, round(f·n_c)) of every class c (`visionax.data.subsets.stratified_fraction` of `seed`, the same
    subsets for every representation, nested as f grows); the test set is always whole."""
    scores = {}
    for fraction in fractions:
        kept = stratified_fraction(train.labels, fraction, seed)
        subset = ArraySource(train.images[kept], train.labels[kept])
        scores[fraction_name(fraction)] = feature_scores(train_features[kept], test_features, subset, test,
                                                         num_classes)
    return scores


def knn_monitor(data_parallel: DataParallel, embed: Embed, train: ArraySource, test: ArraySource,
                num_classes: int, batch_size: int) -> Callable[[object, int], Mapping[str, float]]:
    """An `evaluate(state, step)` for `visionax.train.loop.fit`: the kNN test accuracy of the
    state's encoder features."""

    def monitor(state, step):
        del step
        train_features = encoder_features(data_parallel, embed, state.variables, train.images, batch_size)
        test_features = encoder_features(data_parallel, embed, state.variables, test.images, batch_size)
        return {"knn_accuracy": knn_accuracy(train_features, train.labels, test_features, test.labels,
                                             num_classes)}

    return monitor
