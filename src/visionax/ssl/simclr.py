"""SimCLR (Chen et al. 2020): two augmented views per image, an encoder and a projection head
trained so that the views of one image attract and all others repel (NT-Xent over the global batch).

The per-device `train_step` is written once and run by `visionax.parallel.DataParallel` under
`shard_map` or `pmap`: views are made on the device, both views go through the model in one
concatenated batch (synchronised BatchNorm then sees 2 × global batch), and `nt_xent` is sharded
across devices (each device holds `local_batch × global_batch` similarities). The state is a plain
`visionax.train.state.TrainState` built by `create_train_state`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from visionax.data.augment import ViewSettings, simclr_views
from visionax.errors import UserError
from visionax.losses.contrastive import nt_xent
from visionax.parallel import DATA_AXIS
from visionax.ssl.heads import ProjectionHead
from visionax.train.state import TrainState

__all__ = ["SimCLRSettings", "projection_head", "train_step", "train_step_on_views"]


@dataclasses.dataclass(frozen=True)
class SimCLRSettings:
    """SimCLR's hyperparameters: the NT-Xent temperature τ and the projection head (`head_layers`
    Dense layers, `head_hidden_dim` units, BatchNorm after each hidden one, `projection_dim` out).
    Validated here, once."""

    temperature: float = 0.5
    head_layers: int = 2
    head_hidden_dim: int = 512
    projection_dim: int = 128

    def __post_init__(self):
        if not self.temperature > 0:
            raise UserError(f"temperature={self.temperature} must be positive; pass e.g. --config.temperature=0.5")
        if self.head_layers < 1 or self.head_hidden_dim < 1 or self.projection_dim < 1:
            raise UserError("head_layers, head_hidden_dim and projection_dim must be >= 1; "
                            "pass e.g. --config.head_layers=2")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "SimCLRSettings":
        return cls(temperature=config.temperature, head_layers=config.head_layers,
                   head_hidden_dim=config.head_hidden_dim, projection_dim=config.projection_dim)


def projection_head(settings: SimCLRSettings, *, bn_axis_name: str | None, dtype=jnp.float32) -> ProjectionHead:
    """SimCLR's MLP head, its BatchNorm synchronised over `bn_axis_name`."""
    return ProjectionHead(hidden_dim=settings.head_hidden_dim, output_dim=settings.projection_dim,
                          num_layers=settings.head_layers, batch_norm=True, bn_axis_name=bn_axis_name,
                          dtype=dtype)


def train_step(
    state: TrainState, batch: dict, *, settings: SimCLRSettings, view_settings: ViewSettings
) -> tuple[TrainState, dict]:
    """One SimCLR step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`).

    Views use the key `fold_in(state.rng, state.step)` and per-example keys from the global example
    index, so the result does not depend on the number of devices. Returns the new state and
    `{"loss": NT-Xent of the global batch}`. Bind the options with `functools.partial` and compile
    with `DataParallel.step`.
    """
    images = batch["image"]
    local_batch = images.shape[0]
    step_key = jax.random.fold_in(state.rng, state.step)
    first_index = jax.lax.axis_index(DATA_AXIS) * local_batch
    view1, view2 = simclr_views(step_key, images, view_settings, first_index)
    return train_step_on_views(state, view1, view2, temperature=settings.temperature)


def train_step_on_views(
    state: TrainState, view1: jax.Array, view2: jax.Array, *, temperature: float
) -> tuple[TrainState, dict]:
    """The update of `train_step` given this device's two views `[local_batch, h, w, c]` (model
    input range): both views through the model in one batch, the sharded NT-Xent, gradients
    averaged over devices."""
    both_views = jnp.concatenate([view1, view2], axis=0)

    def loss_fn(params):
        projections, updates = state.apply_fn(
            {**state.variables, "params": params}, both_views, train=True, mutable=["batch_stats"])
        z1, z2 = jnp.split(projections, 2, axis=0)
        return nt_xent(z1, z2, temperature, DATA_AXIS), updates.get("batch_stats", {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)  # already equal with synchronised BN
    return state.apply_gradients(grads, batch_stats=batch_stats), {"loss": loss}
