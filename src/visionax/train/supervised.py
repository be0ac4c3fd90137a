"""Per-device train and eval steps for supervised classification (softmax cross-entropy)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax import lax

from visionax.parallel import DATA_AXIS, per_device_rng
from visionax.train.state import TrainState


def normalize_images(images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 `[batch, h, w, c]` → `dtype` in [-1, 1]: x / 127.5 − 1."""
    return (images.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy −log softmax(s)_y over the local batch (logits `[batch, classes]`)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels).mean()


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One SGD step on the local batch; gradients, metrics and BatchNorm statistics averaged over devices."""
    rng, step_rng = jax.random.split(state.rng)
    images = normalize_images(batch["image"])

    def loss_function(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, updates = state.apply_fn(
            variables, images, train=True, mutable=["batch_stats"],
            rngs={"dropout": per_device_rng(step_rng)},
        )
        return classification_loss(logits, batch["label"]), (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_function, has_aux=True)(state.params)
    grads = lax.pmean(grads, DATA_AXIS)
    metrics = lax.pmean(
        {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["label"])}, DATA_AXIS
    )
    state = state.apply_gradients(grads, batch_stats=lax.pmean(batch_stats, DATA_AXIS), rng=rng)
    return state, metrics


def predict(variables: dict, images: jax.Array, *, apply_fn) -> jax.Array:
    """Logits `[batch, classes]` of uint8 `images` in evaluation mode."""
    return apply_fn(variables, normalize_images(images), train=False)
