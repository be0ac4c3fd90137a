"""MoCo (He et al. 2020; v2: Chen et al. 2020): a query encoder trained by SGD against keys from a
slowly moving key encoder θk ← m·θk + (1 − m)·θq, with the negatives taken from a queue of the K
most recent keys of all devices, and shuffle BN so that BatchNorm cannot leak which key is positive.

The per-device `train_step` runs under `visionax.parallel.DataParallel`. The state is a
`MoCoTrainState`: the `TrainState` of the query encoder plus the typed `key_encoder` (parameters
and BatchNorm statistics) and `queue` (keys `[K, dim]` and the write position). BatchNorm in MoCo
is per device (build the encoder without `bn_axis_name`): the key batch is shuffled across devices
before the key encoder and unshuffled after, so each example's key is normalised with statistics of
a different device group than its query. With few devices, split BatchNorm (`bn_splits`) cuts each
device's batch into groups of `bn_group_size` examples with statistics of their own, so the
shuffle hides the positive key on one device too. MoCo v1 and v2 differ only in their configs
(`experiments/configs/moco_v1.py`, `moco.py`): head, temperature, schedule and augmentation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from visionax.data.augment import ViewSettings, simclr_views
from visionax.errors import UserError
from visionax.losses.contrastive import info_nce, l2_normalize
from visionax.parallel import DATA_AXIS
from visionax.ssl.heads import ContrastiveModel, ProjectionHead
from visionax.train.state import TrainState, create_train_state

__all__ = [
    "MoCoSettings", "KeyEncoder", "Queue", "MoCoTrainState", "projection_head", "check_queue_size",
    "bn_splits", "momentum_update", "enqueue", "group_changing_permutation", "shuffle_across_devices",
    "unshuffle_across_devices",
    "create_moco_state", "train_step",
]


@dataclasses.dataclass(frozen=True)
class MoCoSettings:
    """MoCo's hyperparameters: the InfoNCE temperature τ, the key encoder's momentum m, the queue
    size K, the projection head (`head_layers` = 1: v1's linear head; 2: v2's Dense(hidden), ReLU,
    Dense; `projection_dim` out), and the BatchNorm group size in examples (0: each device's whole
    batch; see `bn_splits`). Validated here, once."""

    temperature: float = 0.2
    momentum: float = 0.999
    queue_size: int = 65536
    head_layers: int = 2
    head_hidden_dim: int = 2048
    projection_dim: int = 128
    bn_group_size: int = 0

    def __post_init__(self):
        if not self.temperature > 0:
            raise UserError(f"temperature={self.temperature} must be positive; pass e.g. --config.temperature=0.2")
        if isinstance(self.bn_group_size, bool) or not isinstance(self.bn_group_size, int) or self.bn_group_size < 0:
            raise UserError(f"bn_group_size must be a non-negative integer (0: the whole per-device batch), "
                            f"not {self.bn_group_size!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise UserError(f"key_momentum={self.momentum} must be in [0, 1); pass e.g. --config.key_momentum=0.99")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) or self.queue_size <= 0:
            raise UserError(f"queue_size={self.queue_size!r} must be a positive integer; "
                            "pass e.g. --config.queue_size=4096")
        if self.head_layers not in (1, 2):
            raise UserError(f"head_layers={self.head_layers}: MoCo's head is linear (1, v1) or an MLP (2, v2)")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "MoCoSettings":
        return cls(temperature=config.temperature, momentum=config.key_momentum,
                   queue_size=config.queue_size, head_layers=config.head_layers,
                   head_hidden_dim=config.head_hidden_dim, projection_dim=config.projection_dim,
                   bn_group_size=config.bn_group_size)

    def bn_splits(self, local_batch: int) -> int:
        """How many BatchNorm groups each device's batch of `local_batch` examples is cut into."""
        return bn_splits(self.bn_group_size, local_batch)


class KeyEncoder(flax.struct.PyTreeNode):
    """The key encoder: parameters θk (the query encoder's moving average) and BatchNorm statistics."""

    params: Any
    batch_stats: Any


class Queue(flax.struct.PyTreeNode):
    """The K most recent keys of all devices `[K, dim]` (unit rows) and the next row to overwrite."""

    keys: jax.Array
    pointer: jax.Array


class MoCoTrainState(TrainState):
    """The query encoder's `TrainState`, its key encoder and the queue of negatives."""

    key_encoder: KeyEncoder
    queue: Queue


def projection_head(settings: MoCoSettings) -> ProjectionHead:
    """v1's linear head or v2's Dense(hidden_dim)–ReLU–Dense head (no BatchNorm)."""
    return ProjectionHead(hidden_dim=settings.head_hidden_dim, output_dim=settings.projection_dim,
                          num_layers=settings.head_layers, batch_norm=False)


def check_queue_size(queue_size: int, global_batch: int) -> None:
    """UserError unless the global batch divides the queue size K (keys are enqueued a batch at a time)."""
    if queue_size <= 0 or queue_size % global_batch:
        suggestion = max(global_batch, queue_size - queue_size % global_batch)
        raise UserError(
            f"MoCo queue_size={queue_size} is not a multiple of the global batch {global_batch}; "
            f"use a positive multiple of it (e.g. queue_size={suggestion})")


def bn_splits(bn_group_size: int, local_batch: int) -> int:
    """How many split-BatchNorm slices each device's batch `local_batch` is cut into so that BatchNorm
    statistics come from `bn_group_size` examples: local_batch / bn_group_size, or 1 (the device's
    whole batch) when the size is 0 or at least the device's batch. UserError unless it divides."""
    if bn_group_size == 0 or bn_group_size >= local_batch:
        return 1
    if local_batch % bn_group_size:
        divisor = max(size for size in range(1, bn_group_size + 1) if local_batch % size == 0)
        raise UserError(f"bn_group_size={bn_group_size} does not divide the per-device batch {local_batch}; "
                        f"use a divisor of it (e.g. bn_group_size={divisor}) or 0 for the whole batch")
    return local_batch // bn_group_size


def momentum_update(key_params, query_params, momentum: float):
    """The key encoder's exponential moving average θk ← m·θk + (1 − m)·θq, leaf by leaf."""
    return jax.tree.map(lambda key, query: momentum * key + (1.0 - momentum) * query,
                        key_params, query_params)


def enqueue(queue: jax.Array, pointer: jax.Array, keys: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Write `keys` `[global_batch, dim]` over the oldest rows of `queue` `[K, dim]` starting at
    `pointer`; the new pointer is (pointer + global_batch) mod K."""
    queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (pointer, jnp.zeros_like(pointer)))
    return queue, (pointer + keys.shape[0]) % queue.shape[0]


def group_changing_permutation(key: jax.Array, num_examples: int, group_size: int) -> jax.Array:
    """A random permutation π of `num_examples` (slot j of the shuffled batch holds example π[j])
    under which no example stays in its BatchNorm group: groups are consecutive blocks of
    `group_size` = g slots, G of them. With the groups relabelled by a random permutation τ, example
    e = q·g + r of group q moves to the group with label (τ(q) + 1 + (σ_q(r) + s) mod (G − 1)) mod G,
    which is never τ(q); σ_q is a random ranking inside group q and s a random shift. Every group
    receives g examples, from g different groups when g < G: the statistics a key is normalised with
    never include its query's own group. With one group, a plain random permutation (there is
    nothing to hide from)."""
    groups = num_examples // group_size
    if groups == 1:
        return jax.random.permutation(key, num_examples)
    rank_key, shift_key, label_key = jax.random.split(key, 3)
    ranks = jax.vmap(lambda k: jax.random.permutation(k, group_size))(jax.random.split(rank_key, groups))
    shift = jax.random.randint(shift_key, (), 0, groups - 1)
    labels = jax.random.permutation(label_key, groups)  # τ
    target_label = (labels[:, None] + 1 + (ranks + shift) % (groups - 1)) % groups  # [G, g]
    target_group = jnp.argsort(labels)[target_label]  # τ⁻¹
    slots = (target_group * group_size + ranks).reshape(-1)  # one free slot per (target group, rank)
    return jnp.zeros(num_examples, jnp.int32).at[slots].set(jnp.arange(num_examples, dtype=jnp.int32))


def shuffle_across_devices(
    key: jax.Array, local: jax.Array, group_size: int, axis_name: str = DATA_AXIS
) -> tuple[jax.Array, jax.Array]:
    """Shuffle BN's first half: all-gather the global batch `[N, ...]`, draw one permutation π of N
    that moves every example out of its BatchNorm group of `group_size` examples
    (`group_changing_permutation`, the same `key` on every device), and give device d the examples
    π[d·n : (d+1)·n].

    Returns this device's shuffled examples `[n, ...]` and π (for `unshuffle_across_devices`).
    """
    everything = jax.lax.all_gather(local, axis_name, tiled=True)
    permutation = group_changing_permutation(key, everything.shape[0], group_size)
    count = local.shape[0]
    mine = jax.lax.dynamic_slice_in_dim(permutation, jax.lax.axis_index(axis_name) * count, count)
    return everything[mine], permutation


def unshuffle_across_devices(
    shuffled: jax.Array, permutation: jax.Array, axis_name: str = DATA_AXIS
) -> jax.Array:
    """Shuffle BN's second half: all-gather the outputs of the shuffled examples (row j belongs to
    example π[j]) and return this device's own examples back in their original order `[n, ...]`."""
    everything = jax.lax.all_gather(shuffled, axis_name, tiled=True)
    inverse = jnp.argsort(permutation)  # inverse[i]: the position of example i in the shuffled batch
    count = shuffled.shape[0]
    mine = jax.lax.dynamic_slice_in_dim(inverse, jax.lax.axis_index(axis_name) * count, count)
    return everything[mine]


def create_moco_state(
    rng: jax.Array,
    model: ContrastiveModel,
    tx: optax.GradientTransformation,
    image_shape: tuple,
    settings: MoCoSettings,
    global_batch: int,
    *,
    init_from: str = "",
) -> MoCoTrainState:
    """A step-0 state through `create_train_state`: key encoder = query encoder at initialisation
    (or as loaded from `init_from`), a queue of K random unit keys."""
    check_queue_size(settings.queue_size, global_batch)

    def fields(variables, queue_key):
        keys = l2_normalize(jax.random.normal(queue_key, (settings.queue_size, settings.projection_dim)))
        return {"key_encoder": KeyEncoder(params=variables["params"], batch_stats=variables.get("batch_stats", {})),
                "queue": Queue(keys=keys, pointer=jnp.zeros((), jnp.int32))}

    return create_train_state(rng, model, tx, image_shape, init_from=init_from, state_class=MoCoTrainState,
                              fields=fields)


def train_step(
    state: MoCoTrainState, batch: dict, *, settings: MoCoSettings, view_settings: ViewSettings
) -> tuple[MoCoTrainState, dict]:
    """One MoCo step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`).

    Order as in the paper's pseudocode: momentum-update the key encoder from the current query
    encoder, compute keys with shuffle BN, InfoNCE of the queries against the keys and the queue,
    SGD on the query encoder, enqueue the normalised keys of all devices (in global example order).
    Returns the new state and `{"loss": InfoNCE of the global batch}`.
    """
    images = batch["image"]
    local_batch = images.shape[0]
    check_queue_size(settings.queue_size, local_batch * jax.lax.axis_size(DATA_AXIS))
    view_key, shuffle_key = jax.random.split(jax.random.fold_in(state.rng, state.step))
    first_index = jax.lax.axis_index(DATA_AXIS) * local_batch
    query_views, key_views = simclr_views(view_key, images, view_settings, first_index)

    key_params = momentum_update(state.key_encoder.params, state.params, settings.momentum)
    group_size = local_batch // settings.bn_splits(local_batch)  # the encoder's BatchNorm groups
    shuffled_views, permutation = shuffle_across_devices(shuffle_key, key_views, group_size)
    key_variables = {"params": key_params, "batch_stats": state.key_encoder.batch_stats}
    shuffled_keys, key_updates = state.apply_fn(key_variables, shuffled_views, train=True,
                                                mutable=["batch_stats"])
    keys = jax.lax.stop_gradient(unshuffle_across_devices(shuffled_keys, permutation))

    def loss_fn(params):
        queries, updates = state.apply_fn({**state.variables, "params": params}, query_views,
                                          train=True, mutable=["batch_stats"])
        loss = info_nce(queries, keys, state.queue.keys, settings.temperature, DATA_AXIS)
        return loss, updates.get("batch_stats", {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    all_keys = jax.lax.all_gather(l2_normalize(keys), DATA_AXIS, tiled=True)
    queue_keys, pointer = enqueue(state.queue.keys, state.queue.pointer, all_keys)
    # Per-device BN statistics differ; their device average keeps the state replicated.
    key_encoder = KeyEncoder(params=key_params,
                             batch_stats=jax.lax.pmean(key_updates.get("batch_stats", {}), DATA_AXIS))
    state = state.apply_gradients(grads, batch_stats=jax.lax.pmean(batch_stats, DATA_AXIS),
                                  key_encoder=key_encoder, queue=Queue(keys=queue_keys, pointer=pointer))
    return state, {"loss": loss}
