"""The optimizer and learning-rate schedule of an experiment, chosen by name from its config.

Built from visionax's own transforms (`visionax.optim`, checked against Optax in its tests) and
schedules (`visionax.schedules`). Weight decay is L2 regularisation: λθ joins the gradient before the
optimizer's rule (for SGD the same as decoupled decay); LARS applies its own masked weight decay.
"""

from __future__ import annotations

import optax

from visionax import optim, schedules
from visionax.errors import UserError

SCHEDULES = ("constant", "cosine", "warmup_cosine")


def check_learning_rate(learning_rate: float) -> None:
    if not learning_rate > 0:
        raise UserError(
            f"learning_rate={learning_rate} must be positive; pass e.g. --config.learning_rate=0.001"
        )


def schedule(name: str, learning_rate: float, *, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """`learning_rate` held constant, cosine-decayed to 0 over `total_steps`, or cosine after a linear warmup."""
    check_learning_rate(learning_rate)
    if name == "constant":
        return schedules.constant(learning_rate)
    if name == "cosine":
        return schedules.cosine(learning_rate, max(total_steps, 1))
    if name == "warmup_cosine":
        return schedules.warmup_cosine(learning_rate, warmup_steps, max(total_steps, warmup_steps + 1))
    raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def create_optimizer(
    name: str, learning_rate: float | optax.Schedule, *, weight_decay: float = 0.0, **options
) -> optax.GradientTransformation:
    """The optimizer `name` (a key of `visionax.optim.OPTIMIZERS`) with weight decay g ← g + λθ."""
    if not callable(learning_rate):
        check_learning_rate(learning_rate)
    if weight_decay < 0:
        raise UserError(f"weight_decay={weight_decay} must be ≥ 0; pass e.g. --config.weight_decay=0.0001")
    if name == "lars":
        return optim.get(name, learning_rate, weight_decay=weight_decay, **options)
    transform = optim.get(name, learning_rate, **options)
    if weight_decay:
        return optax.chain(optim.add_decayed_weights(weight_decay=weight_decay), transform)
    return transform
