"""The supervised classification step, shared by every classifier experiment (a linear classifier,
the two-layer network, the CNN zoo), written once per device for `visionax.parallel.DataParallel`.

Per step, on this device's uint8 batch: the model input (`visionax.data.preprocess.model_input`),
random crop and flip (per-example keys from the global example index, so the views do not depend on
the number of devices), optional preprocessing fitted on the training set (e.g. the mean image),
cutout and mixup (`visionax.layers.regularize`), the data loss (softmax cross-entropy or the
multiclass SVM of `visionax.losses.classification`) plus λ·R(W) (the masked L2 penalty of
`visionax.losses.penalties`), gradients and BatchNorm statistics averaged over the devices, one
optimizer update, and the Polyak average of the parameters when the state keeps one.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
from jax import lax

from visionax import registry
from visionax.data.augment import horizontal_flip, random_crop
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.evaluate.classification import accuracy
from visionax.layers.regularize import cutout, mixup
from visionax.losses.classification import softmax_cross_entropy, svm_hinge
from visionax.losses.penalties import l2
from visionax.optim.averaging import polyak_average
from visionax.parallel import DATA_AXIS, per_device_rng
from visionax.train.state import AveragedTrainState, TrainState

# name -> (logits, targets, svm margin) -> mean data loss
LOSSES = {"softmax": lambda logits, targets, margin: softmax_cross_entropy(logits, targets), "svm": svm_hinge}
Preprocessing = Callable[[jax.Array], jax.Array]

__all__ = ["LOSSES", "SupervisedSettings", "data_loss", "train_step", "predict"]


@dataclasses.dataclass(frozen=True)
class SupervisedSettings:
    """The hyperparameters of the supervised step: the data loss ("softmax" or "svm" with
    `svm_margin` Δ), the L2 penalty λ of loss + λ·R(W), the augmentation (`crop_padding` pixels of
    zero padding for the random crop, `flip_probability`, a `cutout_size` square, mixup's Beta(α, α)
    with α = `mixup_alpha`; 0 turns each off) and the Polyak decay of the averaged parameters."""

    num_classes: int
    loss: str = "softmax"
    svm_margin: float = 1.0
    l2_penalty: float = 0.0
    crop_padding: int = 0
    flip_probability: float = 0.0
    cutout_size: int = 0
    mixup_alpha: float = 0.0
    polyak_decay: float = 0.99

    def __post_init__(self):
        registry.lookup(LOSSES, self.loss, "loss")
        if self.l2_penalty < 0:
            raise UserError(f"l2_penalty={self.l2_penalty} must be >= 0; pass e.g. --config.l2_penalty=0.0001")
        if self.crop_padding < 0 or self.cutout_size < 0 or self.mixup_alpha < 0:
            raise UserError("augment.crop_padding, augment.cutout_size and augment.mixup_alpha must be >= 0 "
                            "(0 turns each off)")
        if not 0.0 <= self.flip_probability <= 1.0:
            raise UserError(f"augment.flip_probability={self.flip_probability} is not a probability; "
                            "pass a value in [0, 1]")
        if self.mixup_alpha and self.loss != "softmax":
            raise UserError("mixup makes soft targets, which only the softmax loss takes; "
                            "pass --config.augment.mixup_alpha=0 or --config.loss=softmax")
        if not 0.0 <= self.polyak_decay < 1.0:
            raise UserError(f"polyak_decay={self.polyak_decay} must be in [0, 1); pass e.g. --config.polyak_decay=0.99")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, num_classes: int) -> "SupervisedSettings":
        """From a config's `loss`, `svm_margin`, `l2_penalty`, `polyak_decay` and `augment` block
        (`crop_padding`, `flip_probability`, `cutout_size`, `mixup_alpha`)."""
        augment = config.augment
        return cls(
            num_classes=num_classes, loss=config.loss, svm_margin=config.svm_margin,
            l2_penalty=config.l2_penalty, crop_padding=augment.crop_padding,
            flip_probability=augment.flip_probability, cutout_size=augment.cutout_size,
            mixup_alpha=augment.mixup_alpha, polyak_decay=config.polyak_decay,
        )


def _augment_one(key: jax.Array, image: jax.Array, settings: SupervisedSettings) -> jax.Array:
    """Random crop and flip of one float image `[h, w, c]`."""
    crop_key, flip_key = jax.random.split(key)
    if settings.crop_padding:
        image = random_crop(crop_key, image, settings.crop_padding)
    if settings.flip_probability:
        image = horizontal_flip(flip_key, image, settings.flip_probability)
    return image


def _cutout_one(key: jax.Array, image: jax.Array, size: int) -> jax.Array:
    return cutout(image[None], size, key)[0]


def data_loss(logits: jax.Array, targets: jax.Array, settings: SupervisedSettings) -> jax.Array:
    """The mean data loss of `logits` `[batch, classes]`: softmax cross-entropy (integer labels or
    `[batch, classes]` mixed targets) or the multiclass SVM hinge with margin Δ."""
    return LOSSES[settings.loss](logits.astype(jnp.float32), targets, settings.svm_margin)


def train_step(state: TrainState, batch: dict, *, settings: SupervisedSettings,
               preprocessing: Preprocessing | None = None) -> tuple[TrainState, dict]:
    """One update on this device's `batch` (`{"image": uint8 [local_batch, h, w, c], "label": int32
    [local_batch]}`); returns the new state and `{"loss", "accuracy"}` of the global batch.

    `loss` is the data loss plus λ·R(W); `accuracy` is measured against the unmixed labels.
    """
    rng, step_rng = jax.random.split(state.rng)
    augment_key, cutout_key, mixup_key, dropout_key = jax.random.split(step_rng, 4)
    images, labels = model_input(batch["image"]), batch["label"]
    local_batch = images.shape[0]
    example = lax.axis_index(DATA_AXIS) * local_batch + jnp.arange(local_batch)
    if settings.crop_padding or settings.flip_probability:
        keys = jax.vmap(lambda index: jax.random.fold_in(augment_key, index))(example)
        images = jax.vmap(_augment_one, in_axes=(0, 0, None))(keys, images, settings)
    if preprocessing is not None:
        images = preprocessing(images)
    if settings.cutout_size:
        keys = jax.vmap(lambda index: jax.random.fold_in(cutout_key, index))(example)
        images = jax.vmap(_cutout_one, in_axes=(0, 0, None))(keys, images, settings.cutout_size)
    targets = labels
    if settings.mixup_alpha:  # partners from this device's batch, one λ per device
        images, targets = mixup(images, labels, per_device_rng(mixup_key), settings.mixup_alpha,
                                num_classes=settings.num_classes)

    def loss_function(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        logits, updates = state.apply_fn(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": per_device_rng(dropout_key)})
        loss = data_loss(logits, targets, settings)
        if settings.l2_penalty:
            loss = loss + settings.l2_penalty * l2(params)
        return loss, (logits, updates.get("batch_stats", {}))

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_function, has_aux=True)(state.params)
    grads = lax.pmean(grads, DATA_AXIS)
    metrics = lax.pmean({"loss": loss, "accuracy": accuracy(logits, labels)}, DATA_AXIS)
    state = state.apply_gradients(grads, batch_stats=lax.pmean(batch_stats, DATA_AXIS), rng=rng)
    if isinstance(state, AveragedTrainState):
        state = state.update_average(polyak_average(settings.polyak_decay))
    return state, metrics


def predict(variables: dict, images: jax.Array, *, apply_fn, preprocessing: Preprocessing | None = None
            ) -> jax.Array:
    """Logits `[batch, classes]` (float32) of uint8 `images` in evaluation mode."""
    inputs = model_input(images)
    if preprocessing is not None:
        inputs = preprocessing(inputs)
    return apply_fn(variables, inputs, train=False).astype(jnp.float32)
