"""Lectures 10–11's captioners as Flax decoders over an image encoder's spatial feature map.

An encoder is any zoo model (`visionax.models.get_model`): `encode` runs it and returns the last
feature map it pools, `[N, h, w, C]` (sown by the zoo as `intermediates/feature_map`; for a ViT the
patch tokens on their grid). Three decoders read that map and a caption `[N, T]` of word ids:

- `RNNCaptioner(cell="rnn" | "lstm")`: the lecture's bottleneck. The map is averaged to one vector,
  h₀ = mean(features)·W_proj + b_proj (c₀ = 0), and the whole image must pass through h₀. Its
  parameters are those of `visionax.models.captioning.rnn_captioning_loss`, which it equals.
- `AttentionLSTMCaptioner`: Show, Attend and Tell. A = features·W_proj + b_proj `[N, h, w, H]`,
  h₀ = c₀ = mean(A); at every step the context cₜ, αₜ = soft_attention(hₜ₋₁, A) enters the gates
  through `attention_lstm_step` (parameters Wx, Wh, Wattn, b in the course's gate order i, f, o, g).
- `CaptioningTransformer`: post-norm decoder layers with a causal self-attention, a cross-attention
  to the memory (the map's positions projected to the model width) and a feed-forward network;
  word embeddings plus sinusoidal positions.

Every decoder offers the same three methods, which `visionax.models.decoding` (greedy, temperature
sampling, beam search) drives through `model.apply(..., method=...)`:
`__call__(features, inputs, train=False) -> logits [N, T, V]` (teacher forcing),
`initial_state(features) -> state` and `step(state, words [N]) -> (state, logits [N, V], attention)`,
where attention is the step's weights over the map `[N, h, w]` (None for the bottleneck).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.errors import UserError
from visionax.layers import recurrent
from visionax.layers.attention import (MultiHeadAttention, attention_lstm_step, causal_mask,
                                       positional_encoding, soft_attention)
from visionax.layers.norm import LayerNorm
from visionax.layers.regularize import Dropout
from visionax.models.common import FEATURE_MAP

__all__ = ["AttentionLSTMCaptioner", "CaptioningTransformer", "DecoderLayer", "RNNCaptioner", "encode"]


def encode(encoder: nn.Module, variables: dict, images: jax.Array, *, train: bool = False,
           rngs: dict | None = None) -> tuple[jax.Array, Any]:
    """The encoder's last feature map `[N, h, w, C]` (float32) and, when `train` and the encoder
    has BatchNorm, its updated `batch_stats` (else None)."""
    mutable = ["intermediates"] + (["batch_stats"] if train and "batch_stats" in variables else [])
    _, updates = encoder.apply(variables, images, train=train, mutable=mutable, rngs=rngs)
    sown = updates.get("intermediates", {}).get(FEATURE_MAP)
    if sown is None:
        raise UserError(f"{type(encoder).__name__} has no spatial feature map for a captioner to read; "
                        "use a convolutional zoo model that ends in global pooling (small_cnn, a ResNet, "
                        "MobileNet, …) or a ViT as the encoder")
    return sown[-1].astype(jnp.float32), updates.get("batch_stats")


def _fan_in(scale: float = 1.0) -> nn.initializers.Initializer:
    """N(0, scale²/fan_in): the course's `randn(fan_in, fan_out) / sqrt(fan_in)`."""
    return nn.initializers.variance_scaling(scale, "fan_in", "normal")


def _scan_steps(initial, step, features: jax.Array, inputs: jax.Array) -> jax.Array:
    """Teacher forcing: `step` over the words `inputs [N, T]` from `initial(features)` → logits `[N, T, V]`."""
    def body(state, words):
        state, logits, _ = step(state, words)
        return state, logits

    _, logits = jax.lax.scan(body, initial(features), inputs.T)
    return logits.swapaxes(0, 1)


class _RecurrentCaptioner(nn.Module):
    """What the two recurrent captioners share: the word embedding, the vocabulary projection and
    teacher forcing through their own `step`."""

    def embed_and_score(self):
        self.W_embed = self.param("W_embed", nn.initializers.normal(0.01), (self.vocab_size, self.wordvec_dim))
        self.W_vocab = self.param("W_vocab", _fan_in(), (self.hidden_dim, self.vocab_size))
        self.b_vocab = self.param("b_vocab", nn.initializers.zeros, (self.vocab_size,))

    def embed(self, words: jax.Array) -> jax.Array:
        return jnp.take(self.W_embed, words, axis=0)

    def scores(self, h: jax.Array) -> jax.Array:
        return h @ self.W_vocab + self.b_vocab

    def __call__(self, features: jax.Array, inputs: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout in the recurrent captioners
        return _scan_steps(self.initial_state, self.step, features, inputs)


class RNNCaptioner(_RecurrentCaptioner):
    """The bottleneck captioner: h₀ = mean_{h,w}(features)·W_proj + b_proj, then a vanilla RNN
    (`cell="rnn"`) or an LSTM (`cell="lstm"`, c₀ = 0) over the embedded words; scores
    hₜ·W_vocab + b_vocab. Parameters `W_proj [C, H]`, `b_proj`, `W_embed [V, W]`, `Wx [W, H or 4H]`,
    `Wh`, `b`, `W_vocab [H, V]`, `b_vocab`, initialised as the course's (randn/√fan_in, embedding
    randn/100, zero biases)."""

    vocab_size: int
    feature_dim: int
    wordvec_dim: int = 256
    hidden_dim: int = 512
    cell: str = "rnn"

    def setup(self):
        if self.cell not in ("rnn", "lstm"):
            raise UserError(f"unknown captioning cell {self.cell!r}; use cell='rnn' or cell='lstm'")
        gates = 4 if self.cell == "lstm" else 1
        H = self.hidden_dim
        self.W_proj = self.param("W_proj", _fan_in(), (self.feature_dim, H))
        self.b_proj = self.param("b_proj", nn.initializers.zeros, (H,))
        self.Wx = self.param("Wx", _fan_in(), (self.wordvec_dim, gates * H))
        self.Wh = self.param("Wh", _fan_in(), (H, gates * H))
        self.b = self.param("b", nn.initializers.zeros, (gates * H,))
        self.embed_and_score()

    def initial_state(self, features: jax.Array) -> dict:
        h = jnp.mean(features, axis=(1, 2)) @ self.W_proj + self.b_proj
        return {"h": h} if self.cell == "rnn" else {"h": h, "c": jnp.zeros_like(h)}

    def step(self, state: dict, words: jax.Array):
        x = self.embed(words)
        if self.cell == "rnn":
            state = {"h": recurrent.rnn_step(x, state["h"], self.Wx, self.Wh, self.b)}
        else:
            h, c = recurrent.lstm_step(x, state["h"], state["c"], self.Wx, self.Wh, self.b)
            state = {"h": h, "c": c}
        return state, self.scores(state["h"]), None


class AttentionLSTMCaptioner(_RecurrentCaptioner):
    """Show, Attend and Tell: A = features·W_proj + b_proj `[N, h, w, H]`, h₀ = c₀ = mean_{h,w}(A);
    at step t the context, αₜ = soft_attention(hₜ₋₁, A) and (hₜ, cₜ) = attention_lstm_step(xₜ, hₜ₋₁,
    cₜ₋₁, context, Wx, Wh, Wattn, b); scores hₜ·W_vocab + b_vocab. Parameters as the bottleneck
    LSTM's plus `Wattn [H, 4H]`."""

    vocab_size: int
    feature_dim: int
    wordvec_dim: int = 256
    hidden_dim: int = 512

    def setup(self):
        H = self.hidden_dim
        self.W_proj = self.param("W_proj", _fan_in(), (self.feature_dim, H))
        self.b_proj = self.param("b_proj", nn.initializers.zeros, (H,))
        self.Wx = self.param("Wx", _fan_in(), (self.wordvec_dim, 4 * H))
        self.Wh = self.param("Wh", _fan_in(), (H, 4 * H))
        self.Wattn = self.param("Wattn", _fan_in(), (H, 4 * H))
        self.b = self.param("b", nn.initializers.zeros, (4 * H,))
        self.embed_and_score()

    def initial_state(self, features: jax.Array) -> dict:
        projected = features @ self.W_proj + self.b_proj
        mean = jnp.mean(projected, axis=(1, 2))
        return {"h": mean, "c": mean, "projected": projected}

    def step(self, state: dict, words: jax.Array):
        context, weights = soft_attention(state["h"], state["projected"])
        h, c = attention_lstm_step(self.embed(words), state["h"], state["c"], context, self.Wx, self.Wh,
                                   self.Wattn, self.b)
        return {"h": h, "c": c, "projected": state["projected"]}, self.scores(h), weights


class DecoderLayer(nn.Module):
    """A post-norm Transformer decoder layer: x = LN(x + drop(self-attention(x, mask))),
    x = LN(x + drop(cross-attention(x, memory))), x = LN(x + drop(FFN(x))) with
    FFN(x) = W₂·drop(relu(W₁x + b₁)) + b₂ (PyTorch's `TransformerDecoderLayer`, the course's).
    `__call__(x [N, T, E], memory [N, M, E], mask, train)` → (x, cross-attention weights `[N, heads, T, M]`)."""

    embed_dim: int
    num_heads: int
    feedforward_dim: int
    dropout_rate: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, memory: jax.Array, mask: jax.Array, train: bool = False):
        def drop(y):
            return Dropout(self.dropout_rate)(y, train=train)

        attention = MultiHeadAttention(self.embed_dim, self.num_heads, self.dropout_rate, name="self_attention")
        x = LayerNorm(epsilon=1e-5, name="norm1")(x + drop(attention(x, mask=mask, train=train)))
        cross = MultiHeadAttention(self.embed_dim, self.num_heads, self.dropout_rate, name="cross_attention")
        attended, weights = cross(x, memory, train=train, return_weights=True)
        x = LayerNorm(epsilon=1e-5, name="norm2")(x + drop(attended))
        hidden = drop(nn.relu(nn.Dense(self.feedforward_dim, name="linear1")(x)))
        return LayerNorm(epsilon=1e-5, name="norm3")(x + drop(nn.Dense(self.embed_dim, name="linear2")(hidden))), weights


class CaptioningTransformer(nn.Module):
    """The course's captioning Transformer over a feature map: memory = the map's h·w positions
    projected to `embed_dim` (`visual_projection`); x = embedding(words) + positional_encoding,
    dropped out; `num_layers` post-norm `DecoderLayer`s with a causal mask; scores = `output`(x).
    Decoding one word at a time reruns the decoder on the words so far (at most `max_length`);
    the causal mask makes position t's scores those of the parallel pass. The attention a step
    reports is the last layer's cross-attention at that position, averaged over the heads."""

    vocab_size: int
    embed_dim: int = 256
    num_heads: int = 4
    num_layers: int = 2
    feedforward_dim: int = 512
    max_length: int = 32
    dropout_rate: float = 0.1

    def setup(self):
        init = nn.initializers.normal(0.02)
        self.visual_projection = nn.Dense(self.embed_dim, kernel_init=init)
        self.embedding = nn.Embed(self.vocab_size, self.embed_dim, embedding_init=init)
        self.layers = [DecoderLayer(self.embed_dim, self.num_heads, self.feedforward_dim, self.dropout_rate)
                       for _ in range(self.num_layers)]
        self.input_dropout = Dropout(self.dropout_rate)
        self.output = nn.Dense(self.vocab_size, kernel_init=init)

    def decode(self, features: jax.Array, inputs: jax.Array, train: bool = False):
        """(logits `[N, T, V]`, the last layer's cross-attention `[N, heads, T, h·w]`)."""
        batch, length = inputs.shape
        if length > self.max_length:
            raise UserError(f"captions of {length} words exceed the Transformer's max_length "
                            f"{self.max_length}; raise max_length or shorten the captions")
        memory = self.visual_projection(features.reshape(batch, -1, features.shape[-1]))
        x = self.embedding(inputs) + positional_encoding(length, self.embed_dim)
        x = self.input_dropout(x, train=train)
        mask = causal_mask(length)
        weights = None
        for layer in self.layers:
            x, weights = layer(x, memory, mask, train=train)
        return self.output(x), weights

    def __call__(self, features: jax.Array, inputs: jax.Array, train: bool = False) -> jax.Array:
        return self.decode(features, inputs, train)[0]

    def initial_state(self, features: jax.Array) -> dict:
        batch = features.shape[0]
        return {"features": features, "words": jnp.zeros((batch, self.max_length), jnp.int32),
                "position": jnp.zeros((batch,), jnp.int32)}

    def step(self, state: dict, words: jax.Array):
        position = state["position"][0]
        sequence = jax.lax.dynamic_update_slice_in_dim(state["words"], words[:, None].astype(jnp.int32),
                                                       position, axis=1)
        logits, weights = self.decode(state["features"], sequence)
        at_position = jax.lax.dynamic_index_in_dim(logits, position, axis=1, keepdims=False)
        attention = jax.lax.dynamic_index_in_dim(weights, position, axis=2, keepdims=False).mean(axis=1)
        attention = attention.reshape(state["features"].shape[:3])
        return ({"features": state["features"], "words": sequence, "position": state["position"] + 1},
                at_position, attention)
