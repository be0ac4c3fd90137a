"""Lecture 10's recurrent networks as barebone functions with explicit parameters, as the course's
assignment writes them: the vanilla RNN, the LSTM (gates i, f, o, g) and the GRU (gates r, z, n),
one step each and the whole sequence through `lax.scan`. Float32 or float64, jit-compatible.

Shapes: x `[N, D]` per step or `[N, T, D]` for a sequence, hidden states `[N, H]`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["gru", "gru_step", "lstm", "lstm_gates", "lstm_step", "rnn", "rnn_step"]


def rnn_step(x: jax.Array, h: jax.Array, Wx: jax.Array, Wh: jax.Array, b: jax.Array) -> jax.Array:
    """One vanilla RNN step: h' = tanh(x·Wx + h·Wh + b); x `[N, D]`, h `[N, H]`, Wx `[D, H]`,
    Wh `[H, H]`, b `[H]` → h' `[N, H]`."""
    return jnp.tanh(x @ Wx + h @ Wh + b)


def _scan_over_time(step, x: jax.Array, carry):
    """`step(x_t, carry) -> (carry', h_t)` over x `[N, T, D]`: all h_t as `[N, T, H]`."""
    _, hidden = jax.lax.scan(lambda carry, x_t: step(x_t, carry), carry, jnp.swapaxes(x, 0, 1))
    return jnp.swapaxes(hidden, 0, 1)


def rnn(x: jax.Array, h0: jax.Array, Wx: jax.Array, Wh: jax.Array, b: jax.Array) -> jax.Array:
    """The vanilla RNN over a sequence: h_t = tanh(x_t·Wx + h_{t−1}·Wh + b) from h0 `[N, H]`; x
    `[N, T, D]` → every hidden state `[N, T, H]`."""
    def step(x_t, h):
        h = rnn_step(x_t, h, Wx, Wh, b)
        return h, h
    return _scan_over_time(step, x, h0)


def lstm_step(x: jax.Array, h: jax.Array, c: jax.Array, Wx: jax.Array, Wh: jax.Array,
              b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One LSTM step: a = x·Wx + h·Wh + b `[N, 4H]` split in the course's order i, f, o, g;
    i = σ(a₁), f = σ(a₂), o = σ(a₃), g = tanh(a₄); c' = f⊙c + i⊙g; h' = o⊙tanh(c').
    Wx `[D, 4H]`, Wh `[H, 4H]`, b `[4H]` → (h', c'), each `[N, H]`."""
    return lstm_gates(x @ Wx + h @ Wh + b, c)


def lstm_gates(a: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The LSTM's update from its pre-activations a `[N, 4H]` (order i, f, o, g) and cell c `[N, H]`:
    c' = σ(a_f)⊙c + σ(a_i)⊙tanh(a_g), h' = σ(a_o)⊙tanh(c') → (h', c')."""
    a_i, a_f, a_o, a_g = jnp.split(a, 4, axis=-1)
    i, f, o, g = jax.nn.sigmoid(a_i), jax.nn.sigmoid(a_f), jax.nn.sigmoid(a_o), jnp.tanh(a_g)
    c_next = f * c + i * g
    return o * jnp.tanh(c_next), c_next


def lstm(x: jax.Array, h0: jax.Array, Wx: jax.Array, Wh: jax.Array, b: jax.Array) -> jax.Array:
    """The LSTM over a sequence from h0 `[N, H]` and c₀ = 0; x `[N, T, D]` → every hidden state
    `[N, T, H]` (the cell states are not returned)."""
    def step(x_t, carry):
        h, c = lstm_step(x_t, *carry, Wx, Wh, b)
        return (h, c), h
    return _scan_over_time(step, x, (h0, jnp.zeros_like(h0)))


def gru_step(x: jax.Array, h: jax.Array, Wx: jax.Array, Wh: jax.Array, bx: jax.Array,
             bh: jax.Array) -> jax.Array:
    """One GRU step, gates in the order r, z, n: r = σ(xWx_r + bx_r + hWh_r + bh_r),
    z = σ(xWx_z + bx_z + hWh_z + bh_z), n = tanh(xWx_n + bx_n + r⊙(hWh_n + bh_n)),
    h' = (1 − z)⊙n + z⊙h. Wx `[D, 3H]`, Wh `[H, 3H]`, bx, bh `[3H]` → h' `[N, H]`.

    This is PyTorch's and Flax's form. Cho et al. (2014) apply the reset gate before the hidden
    matrix, n = tanh(xWx_n + (r⊙h)Wh_n + b), so the hidden product of n cannot be computed with
    the gates' in one matrix product; their update gate weighs the old state as here. Some texts
    swap z and 1 − z (h' = z⊙n + (1 − z)⊙h): the same family, other weights."""
    gates_x, gates_h = x @ Wx + bx, h @ Wh + bh
    x_r, x_z, x_n = jnp.split(gates_x, 3, axis=-1)
    h_r, h_z, h_n = jnp.split(gates_h, 3, axis=-1)
    r, z = jax.nn.sigmoid(x_r + h_r), jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


def gru(x: jax.Array, h0: jax.Array, Wx: jax.Array, Wh: jax.Array, bx: jax.Array,
        bh: jax.Array) -> jax.Array:
    """The GRU over a sequence from h0 `[N, H]`; x `[N, T, D]` → every hidden state `[N, T, H]`."""
    def step(x_t, h):
        h = gru_step(x_t, h, Wx, Wh, bx, bh)
        return h, h
    return _scan_over_time(step, x, h0)
