"""Truncated backpropagation through time (lecture 10): run the recurrent network forward over the
whole sequence but backpropagate only within chunks of k time steps. The hidden state is carried
from one chunk to the next through `lax.stop_gradient`, so a chunk's loss has exactly zero gradient
with respect to everything before the chunk, and memory grows with k, not with the length.

A language model reads a long text as `streams(ids, batch)`: `batch` contiguous streams side by
side `[batch, length]`; a step trains on the chunk at `state.position` of every stream (inputs
ids[p : p + k], targets ids[p + 1 : p + k + 1]) and advances the position; the carried hidden state
and the position live in the training state (`BPTTState`), so a checkpoint holds both and a resumed
run continues where it stopped, with the same hidden state.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from visionax.errors import UserError
from visionax.train.state import TrainState

__all__ = ["BPTTState", "chunk_at", "run_chunks", "streams", "truncated_bptt_step"]

# loss_fn(params, carry, inputs, targets) -> (loss, next_carry)
ChunkLoss = Callable[[Any, Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


class BPTTState(TrainState):
    """A training state that also carries the recurrent `carry` (the hidden state after the last
    chunk, a pytree of `[batch, H]`) and the `position` of the next chunk in the streams."""

    carry: Any
    position: jax.Array


def streams(ids: jax.Array, batch: int) -> jax.Array:
    """The token ids `[length]` cut into `batch` contiguous streams `[batch, length // batch]`
    (the remainder dropped): stream b is ids[b·L : (b + 1)·L]."""
    length = ids.shape[0] // batch
    if length < 2:
        raise UserError(f"a text of {ids.shape[0]} tokens cannot fill {batch} streams of at least 2 tokens; "
                        "use a smaller --config.batch_size or a longer text")
    return ids[: batch * length].reshape(batch, length)


def chunk_at(text_streams: jax.Array, position: jax.Array, chunk_length: int) -> tuple[jax.Array, jax.Array]:
    """(inputs, targets) `[batch, chunk_length]` at `position`: ids[p : p + k] and ids[p + 1 : p + k + 1]."""
    window = jax.lax.dynamic_slice_in_dim(text_streams, position, chunk_length + 1, axis=1)
    return window[:, :-1], window[:, 1:]


def run_chunks(apply_chunk: Callable[[Any, jax.Array], tuple[Any, jax.Array]], carry: Any, inputs: jax.Array,
               chunk_length: int) -> tuple[Any, jax.Array]:
    """`apply_chunk(carry, inputs [batch, k, ...]) -> (carry', outputs [batch, k, ...])` over the
    chunks of inputs `[batch, T, ...]` (T a multiple of k), the carry passed on through
    `lax.stop_gradient` → (final carry, outputs `[batch, T, ...]`). The forward pass equals the
    unchunked run; gradients stop at every chunk boundary."""
    batch, steps = inputs.shape[:2]
    if steps % chunk_length:
        raise UserError(f"a sequence of {steps} steps does not split into chunks of {chunk_length}; "
                        "choose a chunk length that divides it")
    chunks = inputs.reshape(batch, steps // chunk_length, chunk_length, *inputs.shape[2:]).swapaxes(0, 1)

    def body(carry, chunk):
        carry, outputs = apply_chunk(jax.lax.stop_gradient(carry), chunk)
        return carry, outputs

    carry, outputs = jax.lax.scan(body, carry, chunks)
    return carry, outputs.swapaxes(0, 1).reshape(batch, steps, *outputs.shape[3:])


def truncated_bptt_step(loss_fn: ChunkLoss, chunk_length: int):
    """The step `step(state, text_streams) -> (state, metrics)` of truncated BPTT: the chunk at
    `state.position`, its loss `loss_fn(params, stop_gradient(carry), inputs, targets)` and one
    optimizer update; the new carry and position p + k are kept in the state. When the next chunk
    would run past the end of the streams, the position returns to 0 and the carry to zeros (the
    text starts again). Metrics: the chunk's loss and the position it read."""
    def step(state: BPTTState, text_streams: jax.Array):
        if text_streams.shape[1] < chunk_length + 1:
            raise UserError(f"streams of {text_streams.shape[1]} tokens are shorter than one chunk of "
                            f"{chunk_length} + 1; use a smaller chunk length or batch size")
        inputs, targets = chunk_at(text_streams, state.position, chunk_length)
        carry = jax.lax.stop_gradient(state.carry)
        (loss, next_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, carry, inputs, targets)
        position = state.position + chunk_length
        wrapped = position + chunk_length + 1 > text_streams.shape[1]
        next_carry = jax.tree.map(lambda leaf: jnp.where(wrapped, jnp.zeros_like(leaf), leaf), next_carry)
        state = state.apply_gradients(grads, carry=next_carry,
                                      position=jnp.where(wrapped, 0, position).astype(state.position.dtype))
        return state, {"loss": loss, "position": position - chunk_length}
    return step
