"""A character language model (lecture 10's char-RNN): each character id is embedded, read by a
recurrent cell (vanilla RNN, LSTM or GRU of `visionax.layers.cells`) and mapped to scores over the
next character, p(c_{t+1} | c_{≤t}) = softmax(h_t·W + b).

`CharLanguageModel.apply(variables, carry, ids)` runs from an explicit carry, so a long text is read
chunk after chunk with the state passed along (truncated BPTT, `visionax.train.bptt`). On top of it:
the mean next-character loss of a chunk, the bits per character of a whole sequence (a chunked scan
that carries the state) and sampling from a prompt at a temperature (a scan). Shapes: ids
`[batch, time]`, carry a pytree of `[batch, hidden]`, logits `[batch, time, vocab_size]`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from visionax.layers.cells import GRUCell, LSTMCell, SimpleRNNCell

__all__ = ["CELLS", "CharLanguageModel", "bits_per_character", "next_character_loss", "sample"]

CELLS = {"rnn": SimpleRNNCell, "lstm": LSTMCell, "gru": GRUCell}


class CharLanguageModel(nn.Module):
    """ids `[batch, time]` → embedding `[batch, time, embedding]` → `cell` (a name of CELLS) with
    `hidden` units → logits `[batch, time, vocab_size]`."""

    cell: str
    vocab_size: int
    embedding: int
    hidden: int

    @nn.compact
    def __call__(self, carry: Any, ids: jax.Array) -> tuple[Any, jax.Array]:
        """(carry after the last step, logits `[batch, time, vocab_size]`) from `carry` and ids."""
        embedded = nn.Embed(self.vocab_size, self.embedding, name="embed")(ids)
        carry, hidden = nn.RNN(CELLS[self.cell](features=self.hidden), name="recurrent")(
            embedded, initial_carry=carry, return_carry=True)
        return carry, nn.Dense(self.vocab_size, name="readout")(hidden)

    @nn.nowrap
    def initialize_carry(self, batch: int) -> Any:
        """The zero state of `batch` sequences (the LSTM's `(c, h)`, the others' h), each `[batch, hidden]`."""
        cell = CELLS[self.cell](features=self.hidden, parent=None)
        return cell.initialize_carry(jax.random.key(0), (batch, self.embedding))


def next_character_loss(model: CharLanguageModel, params: Any, carry: Any, inputs: jax.Array,
                        targets: jax.Array) -> tuple[jax.Array, Any]:
    """(L, carry'): L = −mean_{b,t} ln softmax(logits_{bt})[targets_{bt}] in nats over inputs and
    targets `[batch, time]`; the truncated-BPTT loss `visionax.train.bptt` expects."""
    carry, logits = model.apply({"params": params}, carry, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), carry


@functools.partial(jax.jit, static_argnames=("model", "chunk_length"))
def bits_per_character(model: CharLanguageModel, params: Any, ids: jax.Array, chunk_length: int) -> jax.Array:
    """H = −Σ_{i=1}^{n−1} log₂ p(ids_i | ids_{<i}) / (n − 1) of one sequence ids `[n]`, read from the
    zero state in chunks of `chunk_length` characters with the state carried from chunk to chunk
    (the same number as one pass over the whole sequence; memory grows with the chunk). The first
    character has no context and is not scored, as in `visionax.data.text.bigram_bits_per_char`."""
    inputs, targets = ids[:-1], ids[1:]
    count = inputs.shape[0]
    padding = -count % chunk_length

    def as_chunks(values):
        return jnp.pad(values, (0, padding)).reshape(-1, 1, chunk_length)

    def read_chunk(carry, chunk):
        chunk_inputs, chunk_targets, chunk_scored = chunk
        carry, logits = model.apply({"params": params}, carry, chunk_inputs)
        nats = optax.softmax_cross_entropy_with_integer_labels(logits, chunk_targets)
        return carry, jnp.sum(jnp.where(chunk_scored, nats, 0.0))

    _, chunk_nats = jax.lax.scan(read_chunk, model.initialize_carry(1),
                                 (as_chunks(inputs), as_chunks(targets), as_chunks(jnp.ones(count, bool))))
    return jnp.sum(chunk_nats) / count / math.log(2.0)


@functools.partial(jax.jit, static_argnames=("model", "length"))
def sample(model: CharLanguageModel, params: Any, prompt: jax.Array, key: jax.Array, temperature: float | jax.Array,
           *, length: int) -> jax.Array:
    """`length` ids `[length]` generated after the prompt ids `[prompt_length]` (prompt_length ≥ 1):
    the prompt is read from the zero state, then each next id is drawn from
    softmax(logits / temperature) and fed back. temperature = 0 takes the argmax (greedy decoding,
    the limit of temperature → 0). One compilation serves every temperature."""
    carry, logits = model.apply({"params": params}, model.initialize_carry(1), prompt[None, :])
    greedy = temperature == 0

    def choose(logits, step_key):
        drawn = jax.random.categorical(step_key, logits / jnp.where(greedy, 1.0, temperature), axis=-1)
        return jnp.where(greedy, jnp.argmax(logits, axis=-1), drawn)

    def generate(state, step_key):
        carry, last_logits = state
        chosen = choose(last_logits, step_key)
        carry, logits = model.apply({"params": params}, carry, chosen[:, None])
        return (carry, logits[:, -1]), chosen[0]

    _, ids = jax.lax.scan(generate, (carry, logits[:, -1]), jax.random.split(key, length))
    return ids
