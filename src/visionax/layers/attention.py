"""Lecture 11's attention: soft spatial attention for captioning (Show, Attend and Tell), the
attention LSTM step, scaled dot-product and multi-head attention (the Transformer's), and the
sinusoidal positional encoding.

Shapes: a batch of N queries `[N, D]` against a feature map `[N, h, w, D]` for spatial attention;
sequences `[N, S, E]` (queries) and `[N, T, E]` (keys and values) for the Transformer's attention.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.layers.recurrent import lstm_gates
from visionax.layers.regularize import dropout

__all__ = ["MultiHeadAttention", "attention_lstm_step", "causal_mask", "positional_encoding",
           "scaled_dot_product_attention", "soft_attention"]


def soft_attention(query: jax.Array, features: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Soft attention over a feature map: weights = softmax over the h·w positions of
    (features·query)/√D, context = Σ weights·features; query `[N, D]`, features `[N, h, w, D]` →
    (context `[N, D]`, weights `[N, h, w]`)."""
    batch, height, width, dim = features.shape
    scores = jnp.einsum("nhwd,nd->nhw", features, query) / jnp.sqrt(jnp.asarray(dim, features.dtype))
    weights = jax.nn.softmax(scores.reshape(batch, height * width), axis=-1).reshape(batch, height, width)
    return jnp.einsum("nhw,nhwd->nd", weights, features), weights


def attention_lstm_step(x: jax.Array, h: jax.Array, c: jax.Array, context: jax.Array, Wx: jax.Array,
                        Wh: jax.Array, Wattn: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One attention-LSTM step: a = x·Wx + h·Wh + context·Wattn + b, then the LSTM's gates i, f, o,
    g of `visionax.layers.recurrent.lstm_step`; x `[N, D]`, h, c `[N, H]`, context `[N, Dc]`,
    Wattn `[Dc, 4H]` → (h', c')."""
    return lstm_gates(x @ Wx + h @ Wh + context @ Wattn + b, c)


def causal_mask(length: int) -> jax.Array:
    """`[1, 1, length, length]` booleans, True where query position s may attend key position t ≤ s."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def scaled_dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                                 mask: jax.Array | None = None, dropout_rate: float = 0.0,
                                 dropout_key: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """softmax(Q·Kᵀ/√d + M)·V per head, with M = −∞ where `mask` is False; query `[N, heads, S, d]`,
    key and value `[N, heads, T, d]`, mask broadcastable to `[N, heads, S, T]` → (output
    `[N, heads, S, d]`, the weights `[N, heads, S, T]` before dropout).

    Inverted dropout (rate, `dropout_key`) is applied to the weights before they multiply V. −∞ is
    the dtype's lowest finite value, as in Flax, so that a query with nothing to attend to gets
    uniform weights rather than NaN."""
    scores = jnp.einsum("nhsd,nhtd->nhst", query, key) / jnp.sqrt(jnp.asarray(query.shape[-1], query.dtype))
    if mask is not None:
        scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    weights = jax.nn.softmax(scores, axis=-1)
    dropped = weights if dropout_key is None else dropout(weights, dropout_rate, dropout_key)
    return jnp.einsum("nhst,nhtd->nhsd", dropped, value), weights


class MultiHeadAttention(nn.Module):
    """Multi-head attention: Q, K, V = the `query`, `key`, `value` projections (`nn.Dense(embed_dim)`
    with biases), split into `num_heads` contiguous chunks of embed_dim/num_heads features; per head
    softmax(Q·Kᵀ/√(embed_dim/num_heads))·V; the heads concatenated and projected by `proj`.

    `__call__(query [N, S, E], key [N, T, E] = query, value [N, T, E] = key, mask=None, train=False)`
    → `[N, S, E]` (with `return_weights=True`: the pair of it and the weights `[N, heads, S, T]`); `mask` broadcastable to `[N, heads, S, T]`, True = may attend. With `train=True`
    and `dropout_rate > 0` the attention weights are dropped out (key from the "dropout" stream).
    The weights before dropout are sown as `intermediates/attention_weights`. Equal to
    `flax.linen.MultiHeadDotProductAttention` with its kernels reshaped to `[E, heads, E/heads]`
    (and `[heads, E/heads, E]` for the output), without dropout. `dtype` is the computation dtype
    (parameters in `param_dtype`), `kernel_init` the four projections' initialiser (biases zero)."""

    embed_dim: int
    num_heads: int
    dropout_rate: float = 0.0
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, query: jax.Array, key: jax.Array | None = None, value: jax.Array | None = None,
                 mask: jax.Array | None = None, train: bool = False, return_weights: bool = False):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        key = query if key is None else key
        value = key if value is None else value
        head_dim = self.embed_dim // self.num_heads

        def dense(name):
            return nn.Dense(self.embed_dim, kernel_init=self.kernel_init, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name)

        def heads(x, name):
            projected = dense(name)(x)
            return projected.reshape(*x.shape[:-1], self.num_heads, head_dim).swapaxes(-2, -3)

        use_dropout = train and self.dropout_rate > 0.0
        output, weights = scaled_dot_product_attention(
            heads(query, "query"), heads(key, "key"), heads(value, "value"), mask,
            self.dropout_rate, self.make_rng("dropout") if use_dropout else None)
        self.sow("intermediates", "attention_weights", weights)
        output = dense("proj")(output.swapaxes(-2, -3).reshape(*query.shape[:-1], self.embed_dim))
        return (output, weights) if return_weights else output


def positional_encoding(length: int, dim: int) -> jax.Array:
    """The Transformer's sinusoids `[length, dim]`: pe[p, 2i] = sin(p / 10000^(2i/dim)),
    pe[p, 2i+1] = cos(p / 10000^(2i/dim))."""
    position = jnp.arange(length, dtype=jnp.float32)[:, None]
    frequency = 10000.0 ** (-jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    angles = position * frequency
    encoding = jnp.zeros((length, dim), jnp.float32)
    encoding = encoding.at[:, 0::2].set(jnp.sin(angles))
    return encoding.at[:, 1::2].set(jnp.cos(angles[:, : dim // 2]))
