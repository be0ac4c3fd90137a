"""The update every classification pretext task shares: the model classifies inputs made from the
images by labels made from the images, and the device's cross-entropy is averaged over the mesh."""

from __future__ import annotations

import jax

from visionax.evaluate.classification import accuracy
from visionax.losses.classification import softmax_cross_entropy
from visionax.parallel import DATA_AXIS
from visionax.train.state import TrainState

__all__ = ["pretext_classification_step"]


def pretext_classification_step(state: TrainState, inputs: jax.Array, labels: jax.Array, accuracy_name: str
                                 ) -> tuple[TrainState, dict]:
    """One update on this device's `inputs` (what the model takes, e.g. `[n, h, w, c]`) and integer
    `labels` `[n]`: L = −(1/n) Σ_i log softmax(f(x_i))_{y_i}; gradients, BatchNorm statistics and
    `{"loss", accuracy_name}` averaged over `DATA_AXIS` (the statistics are already equal where the
    BatchNorm is synchronised)."""

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {**state.variables, "params": params}, inputs, train=True, mutable=["batch_stats"])
        return softmax_cross_entropy(logits, labels), (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)
    metrics = jax.lax.pmean({"loss": loss, accuracy_name: accuracy(logits, labels)}, DATA_AXIS)
    return state.apply_gradients(grads, batch_stats=batch_stats), metrics
