"""The weighted kNN classifier on learned features: the monitor of self-supervised training
(Wu et al. 2018, used by MoCo and SimCLR)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from visionax.losses.contrastive import l2_normalize

__all__ = ["knn_scores", "knn_accuracy"]


@jax.jit(static_argnames=("num_classes", "k"))
def _knn_chunk(train_features, train_labels, test_features, temperature, *, num_classes, k):
    similarity = test_features @ train_features.T  # [chunk, n_train], cosine: rows are unit vectors
    top_similarity, top_index = jax.lax.top_k(similarity, k)
    weights = jnp.exp(top_similarity / temperature)  # [chunk, k]
    votes = jax.nn.one_hot(train_labels[top_index], num_classes) * weights[..., None]
    return jnp.sum(votes, axis=1)


def knn_scores(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 512,
) -> np.ndarray:
    """Weighted kNN class scores `[n_test, num_classes]`: score_c(x) = Σ_{i ∈ top-k(x)} exp(s_i/τ)·[y_i = c],
    s_i the cosine similarity of L2-normalised features, the top k by s (k capped at the train size)."""
    train = l2_normalize(jnp.asarray(train_features, jnp.float32))
    test = np.asarray(l2_normalize(jnp.asarray(test_features, jnp.float32)))
    k = min(k, len(train))
    count = len(test)
    padded = np.concatenate([test, np.zeros(((-count) % chunk_size, test.shape[1]), test.dtype)])
    scores = [
        _knn_chunk(train, jnp.asarray(train_labels), padded[start:start + chunk_size], temperature,
                   num_classes=num_classes, k=k)
        for start in range(0, len(padded), chunk_size)
    ]
    return np.concatenate([np.asarray(score) for score in scores])[:count]


def knn_accuracy(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
) -> float:
    """Fraction of test examples whose highest `knn_scores` class is their label."""
    scores = knn_scores(train_features, train_labels, test_features, num_classes, k, temperature)
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(test_labels)))
