"""Evaluation: classification metrics, the weighted kNN classifier, the linear probe, representation
comparisons, and batch mapping over the device mesh."""

from visionax.evaluate.batches import map_over_batches, padded_batches
from visionax.evaluate.classification import accuracy, classification_metrics
from visionax.evaluate.knn import knn_accuracy, knn_scores
from visionax.evaluate.probe import linear_probe
from visionax.evaluate.representations import (
    LABEL_FRACTIONS,
    encoder_features,
    feature_scores,
    fraction_name,
    knn_monitor,
    label_efficiency,
    pixel_features,
)

__all__ = ["LABEL_FRACTIONS", "accuracy", "classification_metrics", "encoder_features", "feature_scores",
           "fraction_name", "knn_accuracy", "knn_monitor", "knn_scores", "label_efficiency", "linear_probe",
           "map_over_batches", "padded_batches", "pixel_features"]
