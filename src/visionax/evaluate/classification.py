"""How well a classifier does on a labelled set: accuracy and the mean cross-entropy of its logits."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from visionax.losses.classification import softmax_cross_entropy

__all__ = ["accuracy", "classification_metrics"]


def accuracy(logits, labels) -> jnp.ndarray:
    """The fraction of examples whose highest score is their label: mean_i [argmax_c s_ic = y_i],
    for `logits` `[batch, classes]` and integer `labels` `[batch]`."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels)


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """`{"accuracy", "loss"}` of `logits` `[n, classes]` against `labels` `[n]`, the loss being the
    mean softmax cross-entropy."""
    logits = jnp.asarray(logits, jnp.float32)
    return {"accuracy": float(accuracy(logits, labels)),
            "loss": float(softmax_cross_entropy(logits, jnp.asarray(labels)))}
