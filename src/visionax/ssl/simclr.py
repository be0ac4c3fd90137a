"""SimCLR (Chen et al. 2020): two augmented views per image, an encoder and a projection head
trained so that the views of one image attract and all others repel (NT-Xent over the global batch).

The per-device `train_step` is written once and run by `visionax.parallel.DataParallel` under
`shard_map` or `pmap`: views are made on the device, both views go through the model in one
concatenated batch (synchronised BatchNorm then sees 2 × global batch), and `nt_xent` is sharded
across devices (each device holds `local_batch × global_batch` similarities).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from visionax.data.augment import ViewSettings, simclr_views, to_float
from visionax.losses.contrastive import nt_xent
from visionax.parallel import DATA_AXIS
from visionax.ssl.heads import ContrastiveModel
from visionax.train.state import TrainState

__all__ = ["create_train_state", "train_step", "train_step_on_views", "embed"]


def create_train_state(
    rng: jax.Array, model: ContrastiveModel, tx: optax.GradientTransformation, image_shape: tuple
) -> TrainState:
    """A step-0 state for `model` on images of `image_shape` `(height, width, channels)`."""
    init_key, state_key = jax.random.split(rng)
    variables = model.init(init_key, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    return TrainState.create(apply_fn=model.apply, variables=variables, tx=tx, rng=state_key)


def train_step(
    state: TrainState, batch: dict, *, temperature: float, view_settings: ViewSettings
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
    return train_step_on_views(state, view1, view2, temperature=temperature)


def train_step_on_views(
    state: TrainState, view1: jax.Array, view2: jax.Array, *, temperature: float
) -> tuple[TrainState, dict]:
    """The update of `train_step` given this device's two views `[local_batch, h, w, c]`: both views
    through the model in one batch, the sharded NT-Xent, gradients averaged over devices."""
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


def embed(model: ContrastiveModel, variables: dict, images: jax.Array) -> jax.Array:
    """Encoder features `[batch, features]` (evaluation mode, no head) of uint8 or [0, 1] images
    `[batch, h, w, c]`: what the kNN monitor and the linear probe use."""
    return model.apply(variables, to_float(images), method=ContrastiveModel.embed)
