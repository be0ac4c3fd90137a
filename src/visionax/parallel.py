"""Data parallelism: one per-device step written with named-axis collectives, run under
`jax.shard_map` over a device mesh (default) or `jax.pmap`, with the same numbers either way.

Both run the step with pmap's semantics: a gradient taken inside the step is the device's own (no
implicit sum over devices; shard_map runs with `check_vma=False`), so the step averages it itself.
A per-device step has the signature `step(state, batch) -> (state, metrics)`, sees its local slice of
the batch (`[global_batch / devices, ...]`) and averages what must agree across devices with
`lax.pmean(..., DATA_AXIS)` (gradients, metrics, BatchNorm statistics). The returned state and
metrics must be the same on every device.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from visionax import registry
from visionax.errors import UserError

DATA_AXIS = "data"
PARALLEL_IMPLS = ("shard_map", "pmap")

Step = Callable[[Any, Any], tuple[Any, Any]]


def initialize_distributed() -> None:
    """`jax.distributed.initialize()` on a multi-host job (TPU pod, SLURM, or a coordinator address set)."""
    multi_host_markers = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES")
    if any(os.environ.get(marker) for marker in multi_host_markers) and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh named `DATA_AXIS` over `devices` (default: every device of every host)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,))


def check_batch_size(global_batch: int, device_count: int, what: str = "batch_size") -> int:
    """The per-device batch; a UserError when `device_count` does not divide `global_batch`."""
    if global_batch <= 0 or global_batch % device_count:
        raise UserError(
            f"{what}={global_batch} is not divisible by the {device_count} devices; "
            f"use a positive multiple of {device_count} (e.g. --config.{what}="
            f"{max(device_count, global_batch - global_batch % device_count)})"
        )
    return global_batch // device_count


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """Runs a per-device step over `mesh` with `impl` ("shard_map" or "pmap").

    The state lives as `put_state` places it (replicated; with pmap a leading device axis), batches
    as `put_batch` places them (split along their first axis). `get_state` returns a state without a
    device axis, for checkpoints and evaluation.
    """

    mesh: Mesh
    impl: str = "shard_map"

    def __post_init__(self):
        registry.lookup(dict.fromkeys(PARALLEL_IMPLS), self.impl, "parallel")

    @property
    def device_count(self) -> int:
        return self.mesh.devices.size

    @property
    def local_devices(self) -> list:
        return [device for device in self.mesh.devices.flat if device.process_index == jax.process_index()]

    @property
    def _local_split_sharding(self) -> NamedSharding:
        """Arrays with a leading axis of one entry per local device (pmap's layout)."""
        local_mesh = Mesh(np.asarray(self.local_devices), (DATA_AXIS,))
        return NamedSharding(local_mesh, PartitionSpec(DATA_AXIS))

    def put_state(self, state):
        """Replicate a copy of `state` onto every device of the mesh (the step may donate it)."""
        if self.impl == "pmap":
            devices = self.local_devices

            def replicate(leaf):  # one copy per device, never `devices` copies on one device
                leaf = jnp.expand_dims(jnp.asarray(leaf), 0)  # a new buffer: the caller's is never donated
                return jax.make_array_from_single_device_arrays(
                    (len(devices),) + leaf.shape[1:], self._local_split_sharding,
                    [jax.device_put(leaf, device) for device in devices])

            return jax.tree.map(replicate, state)
        # From host values: a copy (device_put may share the caller's buffers, which a donating step
        # would delete), and the form every host can place on a mesh spanning several hosts.
        return jax.device_put(jax.device_get(state), NamedSharding(self.mesh, PartitionSpec()))

    def get_state(self, state):
        """The state without a device axis (the pmap replica of the first local device)."""
        if self.impl == "pmap":
            return jax.tree.map(lambda leaf: leaf[0], state)
        return state

    def put_batch(self, host_batch):
        """Place this host's part of the global batch, split over the devices along axis 0."""
        local_count = len(self.local_devices)
        check_batch_size(
            jax.tree.leaves(host_batch)[0].shape[0] * jax.process_count(),
            self.device_count,
        )
        if self.impl == "pmap":
            return jax.tree.map(
                lambda leaf: jax.device_put(
                    np.reshape(leaf, (local_count, -1) + leaf.shape[1:]), self._local_split_sharding
                ),
                host_batch,
            )
        sharding = NamedSharding(self.mesh, PartitionSpec(DATA_AXIS))
        return jax.tree.map(
            lambda leaf: jax.make_array_from_process_local_data(sharding, np.asarray(leaf)), host_batch
        )

    def step(self, per_device_step: Step, *, donate: bool = True, split_batch: bool = True) -> Step:
        """Compile `per_device_step` into `(state, batch) -> (state, metrics)` over the mesh: the batch
        placed by `put_batch` (split over the devices), or with `split_batch=False` a tree every
        device holds whole (placed by `put_state`, never donated)."""
        donate_argnums = (0,) if donate else ()
        if self.impl == "pmap":
            return jax.pmap(per_device_step, axis_name=DATA_AXIS, donate_argnums=donate_argnums)
        sharded = jax.shard_map(
            per_device_step,
            mesh=self.mesh,
            in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS) if split_batch else PartitionSpec()),
            out_specs=(PartitionSpec(), PartitionSpec()),
            check_vma=False,
        )
        return jax.jit(sharded, donate_argnums=donate_argnums)

    def eval_function(self, per_device_function: Callable, *, sharded_output: bool = True) -> Callable:
        """Compile an evaluation function `(replicated, batch) -> outputs` over the mesh (nothing
        donated).

        `per_device_function(replicated, batch)`; outputs stay split along axis 0 when
        `sharded_output` (e.g. embeddings), else must be replicated (e.g. pmean'd metrics).
        """
        out_spec = PartitionSpec(DATA_AXIS) if sharded_output else PartitionSpec()
        if self.impl == "pmap":
            mapped = jax.pmap(per_device_function, axis_name=DATA_AXIS)
            if sharded_output:
                return lambda replicated, batch: jax.tree.map(
                    lambda leaf: jnp.reshape(leaf, (-1,) + leaf.shape[2:]), mapped(replicated, batch)
                )
            return lambda replicated, batch: jax.tree.map(lambda leaf: leaf[0], mapped(replicated, batch))
        return jax.jit(
            jax.shard_map(
                per_device_function,
                mesh=self.mesh,
                in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS)),
                out_specs=out_spec,
                check_vma=False,
            )
        )


def per_device_rng(rng: jax.Array) -> jax.Array:
    """A key that differs on each device: `fold_in(rng, axis_index)` (call inside a step)."""
    return jax.random.fold_in(rng, jax.lax.axis_index(DATA_AXIS))
