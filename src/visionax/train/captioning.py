"""Training an image captioner: an encoder from the zoo, a learned embedding of the feature map's
positions, and a decoder of `visionax.models.captioners`, trained jointly with teacher forcing on
the temporal softmax loss, through the shared training loop (`visionax.train.loop.fit`).

The parameters are `{"encoder", "positions", "decoder"}`. The feature map gets learned
`positions [h, w, C]` (starting from 2-D sinusoids) added before the decoder reads it (as DETR's memory and ViT's tokens do): a
map from a small CNN knows *what* is at each position but hardly *where*, and reading digits left
to right needs both. The bottleneck decoders average the map, which removes the positions again,
as the lecture's bottleneck removes everything but one vector.

A batch is `{"image": uint8 [batch, h, w, c], "label": int32 [batch, T]}`, the label being the
encoded caption (`<START> words <END> <NULL>…`), so `visionax.data.pipeline.Batches` reads a
`CaptionSource` as it reads an image dataset.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from visionax.data.captions import NULL
from visionax.data.preprocess import model_input
from visionax.layers.attention import positional_encoding
from visionax.losses.sequence import temporal_softmax_loss
from visionax.models import decoding
from visionax.models.captioners import encode
from visionax.parallel import DATA_AXIS, per_device_rng
from visionax.train.state import TrainState

__all__ = ["CaptionSource", "Captioner", "create_state", "describe", "train_step"]


@dataclasses.dataclass(frozen=True)
class CaptionSource(Sequence):
    """Caption k of `captions [pairs, T]` with its image `images[image_index[k]]`, as records
    `{"image", "label"}` (no copy of the images)."""

    images: np.ndarray
    captions: np.ndarray
    image_index: np.ndarray

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        return {"image": self.images[self.image_index[index]], "label": self.captions[index]}


@dataclasses.dataclass(frozen=True)
class Captioner:
    """An encoder (a zoo model with num_classes=None) and a decoder, composed by functions."""

    encoder: nn.Module
    decoder: nn.Module

    def features(self, params: dict, batch_stats: Any, images: jax.Array, *, train: bool = False,
                 rngs: dict | None = None) -> tuple[jax.Array, Any]:
        """The feature map of uint8 `images` plus the learned positions `[N, h, w, C]`, and the
        encoder's updated batch statistics in training."""
        variables = {"params": params["encoder"], **({"batch_stats": batch_stats} if batch_stats else {})}
        feature_map, batch_stats = encode(self.encoder, variables, model_input(images), train=train, rngs=rngs)
        return feature_map + params["positions"], batch_stats

    def decoder_variables(self, params: dict) -> dict:
        return {"params": params["decoder"]}

    def greedy(self, params: dict, batch_stats: Any, images: jax.Array, max_length: int) -> decoding.Decoded:
        features, _ = self.features(params, batch_stats, images)
        return decoding.greedy_decode(self.decoder, self.decoder_variables(params), features, max_length)

    def beam(self, params: dict, batch_stats: Any, images: jax.Array, max_length: int,
             beam_size: int) -> decoding.Decoded:
        features, _ = self.features(params, batch_stats, images)
        return decoding.beam_search(self.decoder, self.decoder_variables(params), features, max_length, beam_size)


def grid_encoding(height: int, width: int, channels: int) -> jax.Array:
    """DETR's 2-D sinusoids `[height, width, channels]`: the first half of the channels the
    `positional_encoding` of the row, the second half that of the column (the learned positions
    start here)."""
    rows, columns = channels // 2, channels - channels // 2
    row = jnp.broadcast_to(positional_encoding(height, rows)[:, None], (height, width, rows))
    column = jnp.broadcast_to(positional_encoding(width, columns)[None], (height, width, columns))
    return jnp.concatenate([row, column], axis=-1)


def create_state(rng: jax.Array, captioner: Captioner, tx: optax.GradientTransformation,
                 images: np.ndarray, captions: np.ndarray) -> TrainState:
    """The step-0 state: encoder, positions (`grid_encoding`) and decoder initialised on a
    sample batch (uint8 `images [n, h, w, c]`, `captions [n, T]`)."""
    encoder_rng, decoder_rng, state_rng = jax.random.split(rng, 3)
    encoder_variables = captioner.encoder.init(encoder_rng, model_input(images))
    feature_map, _ = encode(captioner.encoder, encoder_variables, model_input(images))
    positions = grid_encoding(*feature_map.shape[1:])
    decoder_variables = captioner.decoder.init(decoder_rng, feature_map, jnp.asarray(captions[:, :-1]))
    params = {"encoder": encoder_variables["params"], "positions": positions, "decoder": decoder_variables["params"]}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=encoder_variables.get("batch_stats", {}), opt_state=tx.init(params),
                      rng=state_rng, apply_fn=captioner.decoder.apply, tx=tx)


def train_step(state: TrainState, batch: dict, *, captioner: Captioner) -> tuple[TrainState, dict]:
    """One update on this device's batch: the temporal softmax loss of the words `label[:, 1:]`
    read after `label[:, :-1]` (Σ over steps, mean over captions, `<NULL>` masked). Metrics of the
    global batch: `loss`, `word_loss` (nats per word) and `word_accuracy` (argmax = target)."""
    rng, dropout_key = jax.random.split(state.rng)
    inputs, targets = batch["label"][:, :-1], batch["label"][:, 1:]
    mask = targets != NULL
    rngs = {"dropout": per_device_rng(dropout_key)}

    def loss_function(params):
        features, batch_stats = captioner.features(params, state.batch_stats, batch["image"], train=True, rngs=rngs)
        logits = captioner.decoder.apply(captioner.decoder_variables(params), features, inputs, train=True, rngs=rngs)
        return temporal_softmax_loss(logits, targets, mask), (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_function, has_aux=True)(state.params)
    grads = lax.pmean(grads, DATA_AXIS)
    words = lax.psum(jnp.sum(mask), DATA_AXIS)
    correct = lax.psum(jnp.sum((jnp.argmax(logits, -1) == targets) & mask), DATA_AXIS)
    word_loss = lax.psum(loss * targets.shape[0], DATA_AXIS) / words
    metrics = {"loss": lax.pmean(loss, DATA_AXIS), "word_loss": word_loss, "word_accuracy": correct / words}
    state = state.apply_gradients(grads, batch_stats=lax.pmean(batch_stats, DATA_AXIS) if batch_stats else {},
                                  rng=rng)
    return state, metrics


@functools.partial(jax.jit, static_argnames=("captioner", "max_length", "beam_size"))
def describe(captioner: Captioner, params: dict, batch_stats: Any, images: jax.Array, max_length: int,
             beam_size: int = 0) -> decoding.Decoded:
    """Captions of uint8 `images` in evaluation mode: greedy (beam_size 0) or by beam search."""
    if beam_size:
        return captioner.beam(params, batch_stats, images, max_length, beam_size)
    return captioner.greedy(params, batch_stats, images, max_length)
