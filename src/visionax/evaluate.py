"""Evaluating learned features (lecture 14): the weighted kNN monitor of self-supervised training
(Wu et al. 2018, used by MoCo and SimCLR) and the linear probe (a linear classifier trained on the
features of a frozen encoder)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from visionax.losses.contrastive import l2_normalize

__all__ = ["knn_scores", "knn_accuracy", "linear_probe"]


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


def linear_probe(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    test_features: np.ndarray,
    test_labels: np.ndarray,
    num_classes: int,
    weight_decay: float = 1e-4,
    steps: int = 300,
) -> tuple[float, dict]:
    """Multinomial logistic regression on frozen features, standardised with the train mean and
    std: minimise (1/n) Σ −log softmax(W x_i + b)_{y_i} + (λ/2)‖W‖² by full-batch L-BFGS (optax).

    Returns the test accuracy and the classifier {"weights" `[features, classes]`, "bias",
    "mean", "std"} (apply as ((x − mean)/std) @ weights + bias).
    """
    train_features = np.asarray(train_features, np.float32)
    mean, std = train_features.mean(axis=0), train_features.std(axis=0) + 1e-6
    params, _ = _fit_logistic(
        jnp.asarray((train_features - mean) / std), jnp.asarray(train_labels), weight_decay,
        num_classes=num_classes, steps=steps)
    params = {name: np.asarray(value) for name, value in params.items()}
    logits = ((np.asarray(test_features, np.float32) - mean) / std) @ params["weights"] + params["bias"]
    accuracy = float(np.mean(np.argmax(logits, axis=1) == np.asarray(test_labels)))
    return accuracy, {**params, "mean": mean, "std": std}


@jax.jit(static_argnames=("num_classes", "steps"))
def _fit_logistic(features, labels, weight_decay, *, num_classes, steps):
    def loss(params):
        logits = features @ params["weights"] + params["bias"]
        cross_entropy = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return cross_entropy + 0.5 * weight_decay * jnp.sum(jnp.square(params["weights"]))

    params = {"weights": jnp.zeros((features.shape[1], num_classes)), "bias": jnp.zeros(num_classes)}
    solver = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def iteration(carry, _):
        params, state = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(grad, state, params, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(params, updates), state), value

    (params, _), values = jax.lax.scan(iteration, (params, solver.init(params)), None, length=steps)
    return params, values
