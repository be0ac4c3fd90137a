"""temporal_softmax_loss against a NumPy float64 loop (which divides by N), and its gradient against
centred finite differences."""

import jax
import jax.numpy as jnp
import numpy as np

from visionax.losses.sequence import temporal_softmax_loss

N, T, V = 3, 5, 7


def numpy_loss(logits, targets, mask):
    total = 0.0
    for n in range(logits.shape[0]):
        for t in range(logits.shape[1]):
            scores = logits[n, t] - logits[n, t].max()
            total -= mask[n, t] * (scores[targets[n, t]] - np.log(np.exp(scores).sum()))
    return total / logits.shape[0]


def case(seed=0):
    rng = np.random.default_rng(seed)
    logits, targets = rng.normal(size=(N, T, V)) * 3, rng.integers(0, V, (N, T))
    mask = (rng.random((N, T)) < 0.6).astype(np.float64)
    mask[0] = 0.0  # a sequence of padding only
    return logits, targets, mask


def test_equals_numpy_float64_and_divides_by_n():
    logits, targets, mask = case()
    with jax.enable_x64():
        loss = float(jax.jit(temporal_softmax_loss)(logits, targets, mask))
    # the reference divides the masked sum by N (the course's normalisation), not by N·T nor by the
    # unmasked count: with 8 of the 15 steps unmasked, either of those would be off by a factor
    np.testing.assert_allclose(loss, numpy_loss(logits, targets, mask), rtol=1e-12)
    with jax.enable_x64():
        assert float(temporal_softmax_loss(logits, targets, np.zeros_like(mask))) == 0.0


def test_float32_input_gives_float32():
    logits, targets, mask = case(1)
    loss = temporal_softmax_loss(jnp.asarray(logits, jnp.float32), targets, mask)
    assert loss.dtype == jnp.float32
    np.testing.assert_allclose(float(loss), numpy_loss(logits, targets, mask), rtol=1e-5)


def test_gradient_equals_finite_differences():
    logits, targets, mask = case(2)
    with jax.enable_x64():
        gradient = np.asarray(jax.grad(temporal_softmax_loss)(logits, targets, mask))
    epsilon, expected = 1e-6, np.zeros_like(logits)
    for position in np.ndindex(logits.shape):
        plus, minus = logits.copy(), logits.copy()
        plus[position] += epsilon
        minus[position] -= epsilon
        expected[position] = (numpy_loss(plus, targets, mask) - numpy_loss(minus, targets, mask)) / (2 * epsilon)
    np.testing.assert_allclose(gradient, expected, rtol=1e-6, atol=1e-9)
    assert np.all(gradient[0] == 0)  # the padded sequence gets no gradient
