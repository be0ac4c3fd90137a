"""Evaluation over the device mesh: a function applied to a whole array in padded batches split
across the devices (and hosts: each host places its share of every batch), the outputs gathered
back in order on every host."""

from __future__ import annotations

from typing import Callable, Iterator

import jax
import numpy as np
from jax.experimental import multihost_utils

from visionax.parallel import DataParallel

__all__ = ["padded_batches", "map_over_batches"]


def padded_batches(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """`images` cut into `batch_size` chunks in order, the last padded with zeros: `(chunk, valid
    count)`, each sliced from `images` when it is reached (images decoded on indexing, such as
    `DecodedImages`, are decoded one chunk at a time)."""
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start : start + batch_size])
        valid = len(chunk)
        if valid < batch_size:
            padding = np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)
            chunk = np.concatenate([chunk, padding])
        yield chunk, valid


def map_over_batches(
    data_parallel: DataParallel, per_device_function: Callable, replicated, images: np.ndarray,
    batch_size: int,
) -> np.ndarray:
    """`per_device_function(replicated, images_chunk)` over `images` `[n, ...]` (the same on every
    host; an array, or one decoded on indexing) in padded chunks of `batch_size` split across the devices of every host; the outputs
    `[n, ...]` concatenated in order, padding removed, on every host."""
    placed = data_parallel.put_state(replicated)
    compiled = data_parallel.eval_function(per_device_function)
    hosts, host = jax.process_count(), jax.process_index()
    outputs = []
    for chunk, valid in padded_batches(images, batch_size):
        share = len(chunk) // hosts  # this host's contiguous part of the chunk
        output = compiled(placed, data_parallel.put_batch(chunk[host * share:(host + 1) * share]))
        output = multihost_utils.process_allgather(output, tiled=True) if hosts > 1 else jax.device_get(output)
        outputs.append(np.asarray(output)[:valid])
    return np.concatenate(outputs)
