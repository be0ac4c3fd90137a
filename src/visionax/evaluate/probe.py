"""The linear probe: a linear classifier trained on the features of a frozen encoder."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from visionax.losses.classification import softmax_cross_entropy

__all__ = ["linear_probe"]


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
        cross_entropy = softmax_cross_entropy(logits, labels)
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
