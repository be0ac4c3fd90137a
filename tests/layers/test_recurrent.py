"""The barebone RNN, LSTM and GRU against NumPy float64 references written from the formulas, their
gradients against centred finite differences, and each scan equal to a Python loop of its steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.layers import recurrent

N, T, D, H = 3, 4, 5, 6


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_rnn_step(x, h, Wx, Wh, b):
    return np.tanh(x @ Wx + h @ Wh + b)


def numpy_lstm_step(x, h, c, Wx, Wh, b):
    a = x @ Wx + h @ Wh + b
    i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
    c_next = f * c + i * g
    return o * np.tanh(c_next), c_next


def numpy_gru_step(x, h, Wx, Wh, bx, bh):
    def part(k):
        return slice(k * H, (k + 1) * H)
    r = sigmoid(x @ Wx[:, part(0)] + bx[part(0)] + h @ Wh[:, part(0)] + bh[part(0)])
    z = sigmoid(x @ Wx[:, part(1)] + bx[part(1)] + h @ Wh[:, part(1)] + bh[part(1)])
    n = np.tanh(x @ Wx[:, part(2)] + bx[part(2)] + r * (h @ Wh[:, part(2)] + bh[part(2)]))
    return (1 - z) * n + z * h


def parameters(kind, seed=0):
    """x `[N, T, D]`, h0 `[N, H]` and the weights of `kind`, float64, non-zero biases."""
    rng = np.random.default_rng(seed)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    x, h0 = rng.normal(size=(N, T, D)), rng.normal(size=(N, H))
    weights = [rng.normal(size=(D, gates * H)) * 0.5, rng.normal(size=(H, gates * H)) * 0.5,
               rng.normal(size=gates * H)]
    if kind == "gru":
        weights.append(rng.normal(size=gates * H))
    return x, h0, weights


def numpy_sequence(kind, x, h0, weights):
    h, c, states = h0, np.zeros_like(h0), []
    for t in range(x.shape[1]):
        if kind == "rnn":
            h = numpy_rnn_step(x[:, t], h, *weights)
        elif kind == "lstm":
            h, c = numpy_lstm_step(x[:, t], h, c, *weights)
        else:
            h = numpy_gru_step(x[:, t], h, *weights)
        states.append(h)
    return np.stack(states, axis=1)


SEQUENCE = {"rnn": recurrent.rnn, "lstm": recurrent.lstm, "gru": recurrent.gru}


@pytest.mark.parametrize("kind", SEQUENCE)
def test_sequence_equals_numpy_float64(kind):
    x, h0, weights = parameters(kind)
    with jax.enable_x64():
        hidden = jax.jit(SEQUENCE[kind])(jnp.asarray(x), jnp.asarray(h0), *map(jnp.asarray, weights))
        assert hidden.dtype == jnp.float64
    chex.assert_shape(hidden, (N, T, H))
    np.testing.assert_allclose(hidden, numpy_sequence(kind, x, h0, weights), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", SEQUENCE)
def test_float32_is_float32_and_close(kind):
    x, h0, weights = parameters(kind, seed=1)
    as32 = [jnp.asarray(w, jnp.float32) for w in weights]
    hidden = SEQUENCE[kind](jnp.asarray(x, jnp.float32), jnp.asarray(h0, jnp.float32), *as32)
    assert hidden.dtype == jnp.float32
    np.testing.assert_allclose(hidden, numpy_sequence(kind, x, h0, weights), rtol=1e-4, atol=1e-5)


def test_lstm_gate_order_is_i_f_o_g():
    """With only the forget gate's bias large, c' = c (f = 1, i = 0): a gate order other than
    i, f, o, g would open another gate instead."""
    x, h = np.zeros((1, D)), np.zeros((1, H))
    c = np.linspace(-1, 1, H)[None]
    b = np.concatenate([-50 * np.ones(H), 50 * np.ones(H), 50 * np.ones(H), np.zeros(H)])
    with jax.enable_x64():
        h_next, c_next = recurrent.lstm_step(x, h, c, np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), b)
    np.testing.assert_allclose(c_next, c, atol=1e-12)
    np.testing.assert_allclose(h_next, np.tanh(c), atol=1e-12)  # o = 1


def test_scan_equals_a_loop_of_steps():
    """float64, to the last bits (XLA fuses the scan's body otherwise than the eager steps)."""
    x, h0, weights = parameters("lstm", seed=2)
    with jax.enable_x64():
        h, c, loop = h0, np.zeros_like(h0), []
        for t in range(T):
            h, c = recurrent.lstm_step(x[:, t], h, c, *weights)
            loop.append(h)
        np.testing.assert_allclose(recurrent.lstm(x, h0, *weights), np.stack(loop, axis=1), rtol=1e-14, atol=1e-15)
        x, h0, weights = parameters("gru", seed=2)
        h, loop = h0, []
        for t in range(T):
            h = recurrent.gru_step(x[:, t], h, *weights)
            loop.append(h)
        np.testing.assert_allclose(recurrent.gru(x, h0, *weights), np.stack(loop, axis=1), rtol=1e-14, atol=1e-15)


def centred_differences(function, arrays, index, epsilon=1e-6):
    """∂function/∂arrays[index] by (f(a + ε) − f(a − ε)) / 2ε, element by element."""
    gradient = np.zeros_like(arrays[index])
    for position in np.ndindex(arrays[index].shape):
        values = []
        for sign in (1, -1):
            shifted = [a.copy() for a in arrays]
            shifted[index][position] += sign * epsilon
            values.append(function(*shifted))
        gradient[position] = (values[0] - values[1]) / (2 * epsilon)
    return gradient


@pytest.mark.parametrize("kind", SEQUENCE)
def test_gradients_equal_finite_differences(kind):
    x, h0, weights = parameters(kind, seed=3)
    projection = np.random.default_rng(4).normal(size=(N, T, H))
    arrays = [x, h0, *weights]

    def numpy_loss(x, h0, *weights):
        return float(np.sum(numpy_sequence(kind, x, h0, weights) * projection))

    with jax.enable_x64():
        gradients = jax.grad(lambda *a: jnp.sum(SEQUENCE[kind](*a) * projection), argnums=tuple(range(len(arrays))))(
            *map(jnp.asarray, arrays))
    for index, gradient in enumerate(gradients):
        np.testing.assert_allclose(gradient, centred_differences(numpy_loss, arrays, index), rtol=1e-5, atol=1e-7)
