"""MoCo (He et al. 2020; v2: Chen et al. 2020): a query encoder trained by SGD against keys from a
slowly moving key encoder θk ← m·θk + (1 − m)·θq, with the negatives taken from a queue of the K
most recent keys of all devices, and shuffle BN so that BatchNorm cannot leak which key is positive.

The per-device `train_step` runs under `visionax.parallel.DataParallel`. The key encoder's parameters
and statistics, the queue `[K, dim]` and its write position live in `state.extra`. BatchNorm in
MoCo is per device (build the encoder without `bn_axis_name`): the key batch is shuffled across
devices before the key encoder and unshuffled after, so each example's key is normalised with
statistics of a different device group than its query. With few devices, split BatchNorm
(`bn_splits`) cuts each device's batch into groups of `bn_group_size` examples with statistics of
their own, so the shuffle hides the positive key on one device too.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

from visionax.data.augment import ViewSettings, simclr_views
from visionax.errors import UserError
from visionax.losses.contrastive import info_nce, l2_normalize
from visionax.parallel import DATA_AXIS
from visionax.ssl.heads import ContrastiveModel, ProjectionHead
from visionax.train.state import TrainState

__all__ = [
    "MoCoSettings", "MOCO_PRESETS", "moco_preset", "projection_head", "check_queue_size", "bn_splits",
    "momentum_update", "enqueue", "shuffle_across_devices", "unshuffle_across_devices",
    "create_train_state", "train_step",
]


@dataclasses.dataclass(frozen=True)
class MoCoSettings:
    """One MoCo variant: head, InfoNCE temperature τ, key-encoder momentum m, queue size K, learning
    rate schedule, and the view augmentation (jitter strength s as in SimCLR: 0.8s, 0.8s, 0.8s, 0.2s)."""

    head: str = "mlp"  # "linear" (v1) or "mlp" (v2: Dense, ReLU, Dense)
    embedding_dim: int = 128
    temperature: float = 0.2
    momentum: float = 0.999
    queue_size: int = 65536
    cosine_schedule: bool = True
    area_range: tuple[float, float] = (0.2, 1.0)
    jitter_strength: float = 0.5
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    blur_probability: float = 0.5

    def view_settings(self, output_size: tuple[int, int]) -> ViewSettings:
        """The augmentation of both views at `output_size`."""
        return ViewSettings(
            output_size=tuple(output_size), area_range=self.area_range,
            jitter_strength=self.jitter_strength, jitter_probability=self.jitter_probability,
            grayscale_probability=self.grayscale_probability, blur_probability=self.blur_probability)


MOCO_PRESETS = {
    # v1: linear head, τ 0.07, step schedule, jitter always on (0.4 brightness/contrast/saturation;
    # hue 0.1 here where MoCo v1 used 0.4), no blur.
    "v1": MoCoSettings(head="linear", temperature=0.07, momentum=0.999, cosine_schedule=False,
                       jitter_probability=1.0, blur_probability=0.0),
    # v2: MLP head, τ 0.2, cosine schedule, SimCLR's jitter with probability 0.8, blur.
    "v2": MoCoSettings(head="mlp", temperature=0.2, momentum=0.999, cosine_schedule=True,
                       jitter_probability=0.8, blur_probability=0.5),
}


def moco_preset(name: str, **changes) -> MoCoSettings:
    """The preset `name` ("v1" or "v2") with `changes` applied; UserError for an unknown name."""
    if name not in MOCO_PRESETS:
        raise UserError(f"unknown MoCo version {name!r}; choose one of {', '.join(MOCO_PRESETS)}")
    return dataclasses.replace(MOCO_PRESETS[name], **changes)


def projection_head(settings: MoCoSettings, hidden_dim: int) -> ProjectionHead:
    """v1's linear head or v2's Dense(hidden_dim)–ReLU–Dense head (no BatchNorm)."""
    layers = {"linear": 1, "mlp": 2}
    if settings.head not in layers:
        raise UserError(f"unknown MoCo head {settings.head!r}; choose one of {', '.join(layers)}")
    return ProjectionHead(hidden_dim=hidden_dim, output_dim=settings.embedding_dim,
                          num_layers=layers[settings.head], batch_norm=False)


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
    if isinstance(bn_group_size, bool) or not isinstance(bn_group_size, int) or bn_group_size < 0:
        raise UserError(f"bn_group_size must be a non-negative integer (0: the whole per-device batch), "
                        f"not {bn_group_size!r}")
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
    queue = jax.lax.dynamic_update_slice(queue, keys.astype(queue.dtype), (pointer, 0))
    return queue, (pointer + keys.shape[0]) % queue.shape[0]


def shuffle_across_devices(
    key: jax.Array, local: jax.Array, axis_name: str = DATA_AXIS
) -> tuple[jax.Array, jax.Array]:
    """Shuffle BN's first half: all-gather the global batch `[N, ...]`, draw one permutation π of N
    (the same `key` on every device), and give device d the examples π[d·n : (d+1)·n].

    Returns this device's shuffled examples `[n, ...]` and π (for `unshuffle_across_devices`).
    """
    everything = jax.lax.all_gather(local, axis_name, tiled=True)
    permutation = jax.random.permutation(key, everything.shape[0])
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


def create_train_state(
    rng: jax.Array,
    model: ContrastiveModel,
    tx: optax.GradientTransformation,
    image_shape: tuple,
    settings: MoCoSettings,
    global_batch: int,
) -> TrainState:
    """A step-0 state: query encoder = key encoder at initialisation, a queue of K random unit keys."""
    check_queue_size(settings.queue_size, global_batch)
    init_key, queue_key, state_key = jax.random.split(rng, 3)
    variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    queue = l2_normalize(jax.random.normal(queue_key, (settings.queue_size, settings.embedding_dim)))
    extra = {
        "key_params": variables["params"],
        "key_batch_stats": variables.get("batch_stats", {}),
        "queue": queue,
        "queue_pointer": jnp.zeros((), jnp.int32),
    }
    return TrainState.create(apply_fn=model.apply, variables=variables, tx=tx, rng=state_key, extra=extra)


def train_step(
    state: TrainState, batch: dict, *, settings: MoCoSettings, view_settings: ViewSettings
) -> tuple[TrainState, dict]:
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

    extra = state.extra
    key_params = momentum_update(extra["key_params"], state.params, settings.momentum)
    shuffled_views, permutation = shuffle_across_devices(shuffle_key, key_views)
    key_variables = {"params": key_params, "batch_stats": extra["key_batch_stats"]}
    shuffled_keys, key_updates = state.apply_fn(key_variables, shuffled_views, train=True,
                                                mutable=["batch_stats"])
    keys = jax.lax.stop_gradient(unshuffle_across_devices(shuffled_keys, permutation))

    def loss_fn(params):
        queries, updates = state.apply_fn({**state.variables, "params": params}, query_views,
                                          train=True, mutable=["batch_stats"])
        loss = info_nce(queries, keys, extra["queue"], settings.temperature, DATA_AXIS)
        return loss, updates.get("batch_stats", {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    all_keys = jax.lax.all_gather(l2_normalize(keys), DATA_AXIS, tiled=True)
    queue, pointer = enqueue(extra["queue"], extra["queue_pointer"], all_keys)
    new_extra = {
        "key_params": key_params,
        # Per-device BN statistics differ; their device average keeps the state replicated.
        "key_batch_stats": jax.lax.pmean(key_updates.get("batch_stats", {}), DATA_AXIS),
        "queue": queue,
        "queue_pointer": pointer,
    }
    state = state.apply_gradients(grads, batch_stats=jax.lax.pmean(batch_stats, DATA_AXIS), extra=new_extra)
    return state, {"loss": loss}
