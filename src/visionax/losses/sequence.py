"""The loss of a sequence model over a vocabulary (lecture 10's captioning): softmax cross-entropy
at every time step, masked where the target is padding."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["temporal_softmax_loss"]


def temporal_softmax_loss(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """L = Σₙₜ maskₙₜ · (−log softmax(logitsₙₜ)[targetₙₜ]) / N: logits `[N, T, V]`, integer targets
    `[N, T]`, mask `[N, T]` (1 where the target counts, 0 on padding) → a scalar.

    Divided by N, the number of sequences: not by N·T, nor by the number of unmasked steps. This is
    the course's normalisation (its captioning assignment), so a caption's loss grows with its
    length; losses and learning rates ported from the course code keep their scale.
    """
    log_probabilities = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_probabilities, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return -jnp.sum(mask.astype(logits.dtype) * picked) / logits.shape[0]
