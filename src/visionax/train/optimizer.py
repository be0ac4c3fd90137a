"""The one builder from a config to an optimizer: rule, learning-rate schedule, scaling rule and the
weight-decay mask, from visionax's own transforms (`visionax.optim`, checked against Optax in their
tests) and schedules (`visionax.schedules`).

Config keys read: `optimizer` (a name of `visionax.optim.OPTIMIZERS`), `learning_rate` (the base
value), `scale_learning_rate` (the linear scaling rule: base × batch_size / 256), `schedule`
(`SCHEDULES`), `warmup_epochs`, `weight_decay` and `weight_decay_mask` ("weights": kernels only,
biases and normalisation parameters excluded by `visionax.losses.penalties.decay_mask`, the one
mask rule of the project; "all": every tensor). Weight decay is L2 regularisation: λθ joins the
gradient before the optimizer's rule (for SGD the same as decoupled decay); LARS applies it inside
its layer adaptation, on the same mask.
"""

from __future__ import annotations

import ml_collections
import optax

from visionax import optim, registry, schedules
from visionax.errors import UserError
from visionax.losses.penalties import decay_mask

STEP_BOUNDARIES = (0.6, 0.8)  # "step": ×0.1 at 60% and 80% of training (MoCo v1's epochs 120, 160 of 200)
# name -> (peak, total steps, warmup steps) -> schedule
SCHEDULES = {
    "constant": lambda peak, total, warmup: schedules.constant(peak),
    "cosine": lambda peak, total, warmup: schedules.cosine(peak, total),
    "warmup_cosine": lambda peak, total, warmup: schedules.warmup_cosine(peak, warmup, total),
    "step": lambda peak, total, warmup: schedules.step_decay(peak, [int(f * total) for f in STEP_BOUNDARIES]),
}
DECAY_MASKS = {"weights": decay_mask, "all": None}

__all__ = ["SCHEDULES", "DECAY_MASKS", "check_learning_rate", "learning_rate_schedule", "create_optimizer"]


def check_learning_rate(learning_rate: float, key: str = "learning_rate") -> None:
    if not learning_rate > 0:
        raise UserError(f"{key}={learning_rate} must be positive; pass e.g. --config.{key}=0.001")


def learning_rate_schedule(config: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int,
                           learning_rate: float | None = None) -> optax.Schedule:
    """ε_t of `config.schedule` for `total_steps` updates, from `learning_rate` (default
    `config.learning_rate`), scaled by batch_size/256 when `config.scale_learning_rate`."""
    base = config.learning_rate if learning_rate is None else learning_rate
    check_learning_rate(base)
    peak = schedules.linear_scaling_rule(base, config.batch_size) if config.scale_learning_rate else base
    if config.warmup_epochs < 0:
        raise UserError(f"warmup_epochs={config.warmup_epochs} must be >= 0; pass e.g. --config.warmup_epochs=1")
    total_steps = max(total_steps, 1)
    warmup = min(config.warmup_epochs * steps_per_epoch, total_steps - 1)
    return registry.lookup(SCHEDULES, config.schedule, "schedule")(peak, total_steps, warmup)


def create_optimizer(config: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int,
                     optimizer: str | None = None, learning_rate: float | None = None
                     ) -> optax.GradientTransformation:
    """The optimizer of `config` (or `optimizer` at `learning_rate`, overriding the config's) over
    `total_steps` updates of `steps_per_epoch` per epoch, with masked weight decay g ← g + λθ."""
    name = config.optimizer if optimizer is None else optimizer
    schedule = learning_rate_schedule(config, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                      learning_rate=learning_rate)
    weight_decay = config.weight_decay
    if weight_decay < 0:
        raise UserError(f"weight_decay={weight_decay} must be >= 0; pass e.g. --config.weight_decay=0.0001")
    mask = registry.lookup(DECAY_MASKS, config.weight_decay_mask, "weight_decay_mask")
    if name == "lars":
        return optim.get(name, schedule, weight_decay=weight_decay, mask=mask)
    transform = optim.get(name, schedule)
    if not weight_decay:
        return transform
    decay = optim.add_decayed_weights(weight_decay=weight_decay)
    return optax.chain(decay if mask is None else optax.masked(decay, mask), transform)
