"""SVM hinge and softmax cross-entropy against NumPy float64 loops and finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax import gradcheck, losses


def svm_reference(scores, labels, margin=1.0):
    scores = np.asarray(scores, np.float64)
    total = 0.0
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            if j != labels[i]:
                total += max(0.0, scores[i, j] - scores[i, labels[i]] + margin)
    return total / scores.shape[0]


def svm_grad_reference(scores, labels, margin=1.0):
    scores = np.asarray(scores, np.float64)
    grad = np.zeros_like(scores)
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            if j != labels[i] and scores[i, j] - scores[i, labels[i]] + margin > 0:
                grad[i, j] += 1.0
                grad[i, labels[i]] -= 1.0
    return grad / scores.shape[0]


def softmax_reference(logits, labels):
    logits = np.asarray(logits, np.float64)
    total = 0.0
    for i in range(logits.shape[0]):
        shifted = logits[i] - logits[i].max()
        total += -(shifted[labels[i]] - np.log(np.sum(np.exp(shifted))))
    return total / logits.shape[0]


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    return rng.normal(size=(16, 7)).astype(np.float32) * 2.0, rng.integers(0, 7, size=16)


@pytest.mark.parametrize("margin", [1.0, 0.5, 3.0])
def test_svm_hinge_value(batch, margin):
    scores, labels = batch
    np.testing.assert_allclose(float(losses.svm_hinge(scores, labels, margin)), svm_reference(scores, labels, margin), rtol=1e-6)
    with jax.enable_x64(True):
        value = losses.svm_hinge(jnp.asarray(scores, jnp.float64), labels, margin)
        np.testing.assert_allclose(float(value), svm_reference(scores, labels, margin), rtol=1e-13)


def test_svm_hinge_known_case():
    # Lecture 3's example: scores of the cat image (3.2, 5.1, -1.7), label cat → loss 2.9.
    assert float(losses.svm_hinge(jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0]))) == pytest.approx(2.9, rel=1e-6)
    assert float(losses.svm_hinge(jnp.array([[1.3, 4.9, 2.0]]), jnp.array([1]))) == pytest.approx(0.0)


def test_svm_hinge_gradient(batch):
    scores, labels = batch
    grad = jax.grad(losses.svm_hinge)(jnp.asarray(scores), jnp.asarray(labels))
    np.testing.assert_allclose(grad, svm_grad_reference(scores, labels), atol=1e-6)
    gradcheck.assert_grad_close(lambda s: losses.svm_hinge(s, labels, 1.0), scores.astype(np.float64), tol=1e-6)


def test_softmax_cross_entropy_value(batch):
    logits, labels = batch
    np.testing.assert_allclose(float(losses.softmax_cross_entropy(logits, labels)), softmax_reference(logits, labels), rtol=1e-6)
    with jax.enable_x64(True):
        value = losses.softmax_cross_entropy(jnp.asarray(logits, jnp.float64), labels)
        np.testing.assert_allclose(float(value), softmax_reference(logits, labels), rtol=1e-13)
    optax_value = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    np.testing.assert_allclose(float(losses.softmax_cross_entropy(logits, labels)), float(optax_value), rtol=1e-6)


def test_softmax_cross_entropy_at_init_is_log_c():
    # Lecture 3 sanity check: equal scores give −log(1/C).
    assert float(losses.softmax_cross_entropy(jnp.zeros((4, 10)), jnp.arange(4))) == pytest.approx(np.log(10), rel=1e-6)


def test_softmax_cross_entropy_is_stable_for_large_logits():
    logits = jnp.array([[1000.0, 0.0, -1000.0], [-1000.0, 1000.0, 0.0]])
    labels = jnp.array([2, 1])
    value, grad = jax.value_and_grad(losses.softmax_cross_entropy)(logits, labels)
    assert float(value) == pytest.approx(1000.0, rel=1e-6)
    assert np.all(np.isfinite(grad))


def test_softmax_cross_entropy_soft_labels(batch):
    logits, labels = batch
    one_hot = jax.nn.one_hot(labels, 7)
    np.testing.assert_allclose(losses.softmax_cross_entropy(logits, one_hot), losses.softmax_cross_entropy(logits, labels), rtol=1e-6)
    rng = np.random.default_rng(1)
    targets = rng.dirichlet(np.ones(7), size=16)
    log_softmax = logits - np.log(np.sum(np.exp(logits.astype(np.float64)), axis=1, keepdims=True))
    expected = -np.mean(np.sum(targets * log_softmax, axis=1))
    np.testing.assert_allclose(float(losses.softmax_cross_entropy(logits, targets.astype(np.float32))), expected, rtol=1e-5)


def test_softmax_cross_entropy_gradient(batch):
    logits, labels = batch
    grad = jax.grad(losses.softmax_cross_entropy)(jnp.asarray(logits), jnp.asarray(labels))
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = (probs - np.eye(7)[labels]) / len(labels)  # (p − y) / B
    np.testing.assert_allclose(grad, expected, atol=1e-6)
    gradcheck.assert_grad_close(lambda s: losses.softmax_cross_entropy(s, labels), logits, tol=1e-6)
