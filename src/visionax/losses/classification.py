"""Classification losses of lecture 3: the multiclass SVM (hinge) loss and softmax cross-entropy.

Both take unnormalised class scores of shape (B, C) and return the mean over the batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["svm_hinge", "softmax_cross_entropy"]


def svm_hinge(scores: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
    """Multiclass SVM loss: mean over the batch of Σ_{j≠y} max(0, s_j − s_y + Δ), Δ = `margin`.

    `scores` is (B, C); `labels` is (B,) integer class indices.
    """
    scores = jnp.asarray(scores)
    labels = jnp.asarray(labels)
    correct = jnp.take_along_axis(scores, labels[:, None], axis=-1)  # (B, 1): s_y
    margins = jnp.maximum(0.0, scores - correct + margin)
    not_target = jnp.arange(scores.shape[-1])[None, :] != labels[:, None]
    return jnp.mean(jnp.sum(jnp.where(not_target, margins, 0.0), axis=-1))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Softmax cross-entropy: mean over the batch of −Σ_c p_c log softmax(s)_c (= −log softmax(s)_y for a hard label).

    `logits` is (B, C); `labels` is (B,) integer class indices or (B, C) target probabilities
    (one-hot, smoothed or mixed, as mixup gives). The log-softmax is computed as s − logsumexp(s),
    stable for any logits.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    log_probs = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    if labels.ndim == logits.ndim:
        return -jnp.mean(jnp.sum(labels * log_probs, axis=-1))
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0])
