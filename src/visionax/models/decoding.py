"""Turning a captioner into words: greedy decoding, temperature sampling and beam search, jitted.

Each works on any decoder of `visionax.models.captioners` through its `initial_state` and `step`
methods, so the decoding loop is one `lax.scan` of `model.apply(variables, state, words,
method="step")`. A caption is `[max_length]` word ids: `<START>` first, then the decoded words; once
a caption has produced `<END>`, the rest is `<NULL>`. Its log-probability is Σ log p(wₜ | w<ₜ, image)
over the words up to and including `<END>` (beam search ranks by it, without length normalisation).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.data.captions import END, NULL, START
from visionax.errors import UserError

__all__ = ["Decoded", "beam_search", "greedy_decode", "sample_captions"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Decoded:
    """Captions `[N, max_length]` (START first), their log-probabilities `[N]`, and the attention of
    every step over the feature map `[N, max_length − 1, h, w]` (None for a model without attention)."""

    words: jax.Array
    log_prob: jax.Array
    attention: Any = None


def _check_length(max_length: int) -> None:
    if max_length < 2:
        raise UserError(f"max_length={max_length} leaves no room for a word after <START>; use max_length >= 2")


def _step(model: nn.Module, variables: dict, state, words: jax.Array):
    return model.apply(variables, state, words, method="step")


@functools.partial(jax.jit, static_argnames=("model", "max_length", "temperature"))
def _decode(model: nn.Module, variables: dict, features: jax.Array, rng: jax.Array, max_length: int,
            temperature: float) -> Decoded:
    """One word per step: argmax of the scores (temperature 0) or a draw from softmax(scores / T)."""
    batch = features.shape[0]
    state = model.apply(variables, features, method="initial_state")
    start = jnp.full((batch,), START, jnp.int32)

    def body(carry, key):
        state, words, finished, log_prob = carry
        state, logits, attention = _step(model, variables, state, words)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if temperature == 0.0:
            chosen = jnp.argmax(log_probs, axis=-1)
        else:
            chosen = jax.random.categorical(key, log_probs / temperature, axis=-1)
        chosen = chosen.astype(jnp.int32)
        picked = jnp.take_along_axis(log_probs, chosen[:, None], axis=-1)[:, 0]
        log_prob = log_prob + jnp.where(finished, 0.0, picked)
        chosen = jnp.where(finished, NULL, chosen)
        return (state, chosen, finished | (chosen == END), log_prob), (chosen, attention)

    initial = (state, start, jnp.zeros((batch,), bool), jnp.zeros((batch,), jnp.float32))
    keys = jax.random.split(rng, max_length - 1)
    (_, _, _, log_prob), (words, attention) = jax.lax.scan(body, initial, keys)
    words = jnp.concatenate([start[:, None], words.T], axis=1)
    attention = None if attention is None else attention.swapaxes(0, 1)
    return Decoded(words, log_prob, attention)


def greedy_decode(model: nn.Module, variables: dict, features: jax.Array, max_length: int) -> Decoded:
    """The most probable word at every step, wₜ = argmax p(w | w<ₜ, image)."""
    _check_length(max_length)
    return _decode(model, variables, features, jax.random.key(0), max_length, 0.0)


def sample_captions(model: nn.Module, variables: dict, features: jax.Array, max_length: int,
                    rng: jax.Array, temperature: float = 1.0) -> Decoded:
    """Words drawn from softmax(scores / temperature) at every step (temperature 0: greedy)."""
    _check_length(max_length)
    if temperature < 0:
        raise UserError(f"temperature={temperature} must be >= 0 (0 decodes greedily)")
    return _decode(model, variables, features, rng, max_length, float(temperature))


@functools.partial(jax.jit, static_argnames=("model", "max_length", "beam_size"))
def _beam_search(model: nn.Module, variables: dict, features: jax.Array, max_length: int,
                 beam_size: int) -> Decoded:
    batch, beams = features.shape[0], beam_size
    state = model.apply(variables, jnp.repeat(features, beams, axis=0), method="initial_state")
    # Only the first beam is alive at the start, so the first step fans out from one hypothesis.
    scores = jnp.tile(jnp.where(jnp.arange(beams) == 0, 0.0, -jnp.inf), (batch, 1))
    tokens = jnp.full((batch, beams, max_length), NULL, jnp.int32).at[:, :, 0].set(START)
    finished = jnp.zeros((batch, beams), bool)
    rows = jnp.arange(batch)[:, None]

    def reorder(leaf, beam):  # leaf [batch·beams, ...] → the chosen beams' rows
        leaf = leaf.reshape(batch, beams, *leaf.shape[1:])[rows, beam]
        return leaf.reshape(batch * beams, *leaf.shape[2:])

    def body(carry, position):
        state, tokens, scores, finished = carry
        words = jax.lax.dynamic_index_in_dim(tokens, position - 1, axis=2, keepdims=False).reshape(-1)
        state, logits, _ = _step(model, variables, state, words)
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(batch, beams, -1)
        vocab = log_probs.shape[-1]
        # A finished hypothesis continues only with <NULL>, at no cost.
        only_null = jnp.where(jnp.arange(vocab) == NULL, 0.0, -jnp.inf)
        log_probs = jnp.where(finished[..., None], only_null, log_probs)
        total = (scores[..., None] + log_probs).reshape(batch, beams * vocab)
        scores, index = jax.lax.top_k(total, beams)
        beam, word = index // vocab, (index % vocab).astype(jnp.int32)
        state = jax.tree.map(lambda leaf: reorder(leaf, beam), state)
        tokens = jax.lax.dynamic_update_index_in_dim(tokens[rows, beam], word, position, axis=2)
        finished = finished[rows, beam] | (word == END)
        return (state, tokens, scores, finished), None

    (_, tokens, scores, _), _ = jax.lax.scan(body, (state, tokens, scores, finished),
                                             jnp.arange(1, max_length))
    best = jnp.argmax(scores, axis=1)
    return Decoded(tokens[jnp.arange(batch), best], scores[jnp.arange(batch), best])


def beam_search(model: nn.Module, variables: dict, features: jax.Array, max_length: int,
                beam_size: int = 3) -> Decoded:
    """The caption of highest log-probability among `beam_size` hypotheses kept at every step: each
    step extends every hypothesis by every word and keeps the `beam_size` best sums of log p. With
    beam_size 1 it is greedy decoding; with beam_size ≥ V^(max_length − 1) it is exact."""
    _check_length(max_length)
    if beam_size < 1:
        raise UserError(f"beam_size={beam_size} must be >= 1")
    return _beam_search(model, variables, features, max_length, beam_size)
