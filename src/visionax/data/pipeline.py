"""The input pipeline: a deterministic sampler that turns a random-access source into global batches.

Batch `step` of a run is a pure function of `(seed, step)`: epoch `e = step // steps_per_epoch` reads
the source in the order of a permutation drawn from `(seed, e)`, and host `p` of `P` takes its
contiguous `1/P` share of each global batch. So the same seed gives the same batches, every epoch is
shuffled anew, a resumed run reads exactly the batches an uninterrupted one would, and each host reads
only its own shard. A split held in memory (`ArraySource`, what `visionax.train.setup` makes of any split
below `config.data.in_memory_mb`) gives the same batches by one gather instead of record by record.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from visionax.errors import UserError


@dataclasses.dataclass(frozen=True)
class ArraySource:
    """In-memory arrays as a random-access source of `{"image", "label"}` records."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index], "label": self.labels[index]}


@dataclasses.dataclass(frozen=True)
class Batches:
    """Global batches of `batch_size` records (remainder of each epoch dropped), shuffled per epoch.

    `host_batch(step)` returns this host's `{"image": uint8 [batch_size / hosts, h, w, c],
    "label": int32 [batch_size / hosts]}` part of global batch number `step`.
    """

    source: Sequence[dict]
    batch_size: int
    seed: int
    process_index: int = dataclasses.field(default_factory=jax.process_index)
    process_count: int = dataclasses.field(default_factory=jax.process_count)

    def __post_init__(self):
        if self.batch_size > len(self.source):
            raise UserError(
                f"batch_size={self.batch_size} exceeds the {len(self.source)} training examples; "
                f"use --config.batch_size={len(self.source)} or less"
            )
        if self.batch_size % self.process_count:
            raise UserError(
                f"batch_size={self.batch_size} is not divisible by the {self.process_count} hosts; "
                f"use a multiple of {self.process_count}"
            )

    @property
    def steps_per_epoch(self) -> int:
        return len(self.source) // self.batch_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The order in which epoch `epoch` reads the source."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.source))

    def indices(self, step: int) -> np.ndarray:
        """The source indices of this host's part of global batch `step`."""
        epoch, position = divmod(step, self.steps_per_epoch)
        batch = self.permutation(epoch)[position * self.batch_size : (position + 1) * self.batch_size]
        host_size = self.batch_size // self.process_count
        return batch[self.process_index * host_size : (self.process_index + 1) * host_size]

    def close(self) -> None:
        """Release what reading holds (nothing here; `StreamedBatches`' worker processes)."""

    def host_batch(self, step: int) -> dict[str, np.ndarray]:
        indices = self.indices(step)
        if isinstance(self.source, ArraySource):  # a split held in memory: one gather, no records
            return {"image": self.source.images[indices], "label": self.source.labels[indices]}
        records = [self.source[index] for index in indices.tolist()]
        images = np.stack([np.asarray(record["image"], np.uint8) for record in records])
        if images.ndim == 3:
            images = images[..., None]
        return {"image": images, "label": np.asarray([record["label"] for record in records], np.int32)}
