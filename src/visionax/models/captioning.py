"""Lecture 10's image captioning: an image feature sets the first hidden state of an RNN or LSTM
language model that reads the caption one word at a time and predicts the next word.

`rnn_captioning_loss` is the course assignment's barebone network with explicit parameters (its
`CaptioningRNN.loss`), so weights and numbers port both ways. Shapes: features `[N, D]`, captions
`[N, T]` word ids, word vectors of size W, hidden size H, vocabulary V.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from visionax.errors import UserError
from visionax.layers import recurrent
from visionax.losses.sequence import temporal_softmax_loss

__all__ = ["rnn_captioning_loss"]

_SEQUENCE = {"rnn": recurrent.rnn, "lstm": recurrent.lstm}


def rnn_captioning_loss(params: dict, features: jax.Array, captions: jax.Array, *, cell: str = "rnn",
                        null: int = 0) -> jax.Array:
    """The captioning loss: h₀ = features·W_proj + b_proj; the words `captions[:, :-1]` embedded by
    W_embed `[V, W]` run through the `cell` ("rnn" or "lstm", weights Wx, Wh, b); scores
    h_t·W_vocab + b_vocab `[N, T−1, V]` against the targets `captions[:, 1:]`, masked where the
    target is `null`: `temporal_softmax_loss` (summed over steps, divided by N).

    params: `W_proj [D, H]`, `b_proj [H]`, `W_embed [V, W]`, `Wx [W, H]` (`[W, 4H]` for the LSTM),
    `Wh [H, H]` (`[H, 4H]`), `b [H]` (`[4H]`), `W_vocab [H, V]`, `b_vocab [V]`."""
    if cell not in _SEQUENCE:
        raise UserError(f"unknown captioning cell {cell!r}; use cell='rnn' or cell='lstm'")
    inputs, targets = captions[:, :-1], captions[:, 1:]
    h0 = features @ params["W_proj"] + params["b_proj"]
    words = jnp.take(params["W_embed"], inputs, axis=0)
    hidden = _SEQUENCE[cell](words, h0, params["Wx"], params["Wh"], params["b"])
    scores = hidden @ params["W_vocab"] + params["b_vocab"]
    return temporal_softmax_loss(scores, targets, targets != null)
