"""How training batches reach the compiled step: from the host at every step (`HostFeed`), or
gathered on the devices from a split placed there once (`DeviceFeed`, `config.data.on_device=True`).

Both give the step the same batches: batch `s` is `Batches.indices(s)` of the split either way.
`DeviceFeed` places the uint8 split (`{"image": [n, h, w, c], "label": [n]}`) on every device once and
each epoch's order (`[n]` int32) once per epoch. The compiled step reads its position in the epoch from
`state.step` (the count of steps taken, which `loop.fit` resumes from) and gathers its own rows: device
`d` of `D` takes rows `d·B/D … (d+1)·B/D − 1` of global batch `B`, as `put_batch` splits a host batch.
So no image and no index crosses from the host at a step; the host only dispatches it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax.data.pipeline import ArraySource, Batches
from visionax.data.streaming import StreamedBatches
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS, DataParallel, Step

# (device state, step number) -> (device state, metrics)
FedStep = Callable[[Any, int], tuple[Any, Any]]

__all__ = ["FedStep", "HostFeed", "DeviceFeed", "check", "feed", "on_device"]


@dataclasses.dataclass(frozen=True)
class HostFeed:
    """Batch `s` made on the host (`batches.host_batch(s)`) and placed on the devices at step `s`."""

    batches: Any  # anything with host_batch(step): Batches, an ensemble's batch orders, text streams
    data_parallel: DataParallel

    def step(self, per_device_step: Step, *, donate: bool = True) -> FedStep:
        """`per_device_step` compiled over the mesh, called as `(device_state, step) -> (device_state, metrics)`."""
        compiled = self.data_parallel.step(per_device_step, donate=donate)

        def fed_step(state, step: int):
            return compiled(state, self.data_parallel.put_batch(self.batches.host_batch(step)))

        return fed_step

    def close(self) -> None:
        """Release what the batches hold (a `StreamedBatches`' workers)."""
        if isinstance(self.batches, Batches):
            self.batches.close()


class DeviceFeed:
    """The training split of `batches` (an `ArraySource`) on every device; each step gathers its batch."""

    def __init__(self, batches: Batches, data_parallel: DataParallel):
        if not isinstance(batches.source, ArraySource):
            raise TypeError("DeviceFeed needs batches over an ArraySource (a split held in memory)")
        self.batches = batches
        self.data_parallel = data_parallel
        self.split = data_parallel.put_state({"image": batches.source.images, "label": batches.source.labels})
        self._placed_order = (None, None)  # (epoch, its order on the devices)

    def order(self, epoch: int) -> jax.Array:
        """Epoch `epoch`'s permutation of the split (`[n]` int32) on every device, placed once per epoch."""
        placed_epoch, placed = self._placed_order
        if placed_epoch != epoch:
            placed = self.data_parallel.put_state(self.batches.permutation(epoch).astype(np.int32))
            self._placed_order = (epoch, placed)
        return placed

    def step(self, per_device_step: Step, *, donate: bool = True) -> FedStep:
        """`per_device_step` behind an in-step gather, compiled over the mesh, called as
        `(device_state, step) -> (device_state, metrics)`."""
        batch_size, steps_per_epoch = self.batches.batch_size, self.batches.steps_per_epoch
        device_batch = batch_size // self.data_parallel.device_count

        def gathering_step(state, resident):
            position = state.step % steps_per_epoch
            start = position * batch_size + jax.lax.axis_index(DATA_AXIS) * device_batch
            indices = jax.lax.dynamic_slice_in_dim(resident["order"], start, device_batch)
            batch = {key: jnp.take(resident[key], indices, axis=0) for key in ("image", "label")}
            return per_device_step(state, batch)

        compiled = self.data_parallel.step(gathering_step, donate=donate, split_batch=False)

        def fed_step(state, step: int):
            return compiled(state, {**self.split, "order": self.order(step // steps_per_epoch)})

        return fed_step

    def close(self) -> None:
        """Nothing to release: the split stays placed until the feed is dropped."""


def on_device(config: ml_collections.ConfigDict) -> bool:
    """`config.data.on_device` (False where the config has no such key)."""
    return bool(config.get("data", {}).get("on_device", False))


def check(config: ml_collections.ConfigDict, batches: Any) -> None:
    """Raise UserError where `config.data.on_device` asks for a gather on the devices that `batches`
    cannot give (streamed from encoded images, not an image split, or a split too large to be held in
    memory)."""
    if not on_device(config):
        return
    if isinstance(batches, StreamedBatches):
        raise UserError("data.on_device=True places a split held in memory on the devices; data.encoded=True streams "
                        "the split through decoding workers instead: drop one of the two")
    if not isinstance(batches, Batches):
        raise UserError(f"data.on_device=True gathers image batches from a split on the devices; this "
                        f"experiment's batches ({type(batches).__name__}) are not one: drop --config.data.on_device")
    if not isinstance(batches.source, ArraySource):
        raise UserError(f"data.on_device=True needs the training split in memory, but it is larger than "
                        f"data.in_memory_mb={config.data.get('in_memory_mb')}: raise --config.data.in_memory_mb "
                        "or drop --config.data.on_device")


def feed(config: ml_collections.ConfigDict, batches: Any, data_parallel: DataParallel) -> HostFeed | DeviceFeed:
    """The feed `config.data.on_device` asks for (raises `check`'s UserError)."""
    check(config, batches)
    return DeviceFeed(batches, data_parallel) if on_device(config) else HostFeed(batches, data_parallel)
