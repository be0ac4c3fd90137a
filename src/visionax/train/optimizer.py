"""Optimizers and learning-rate schedules chosen by name from a config."""

from __future__ import annotations

from typing import Callable

import optax

from visionax.errors import UserError

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate)
    ),
    "momentum": lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=0.9)
    ),
    "nesterov": lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=0.9, nesterov=True)
    ),
    "adam": lambda learning_rate, weight_decay: optax.adamw(learning_rate, weight_decay=weight_decay),
    "rmsprop": lambda learning_rate, weight_decay: optax.chain(
        optax.add_decayed_weights(weight_decay), optax.rmsprop(learning_rate)
    ),
    "lars": lambda learning_rate, weight_decay: _lars(learning_rate, weight_decay),
}

SCHEDULES = ("constant", "cosine", "warmup_cosine")


def _lars(learning_rate, weight_decay):
    from visionax import optim

    return optim.lars(learning_rate, weight_decay=weight_decay)


def check_learning_rate(learning_rate: float) -> None:
    if not learning_rate > 0:
        raise UserError(
            f"learning_rate={learning_rate} must be positive; pass e.g. --config.learning_rate=0.001"
        )


def schedule(name: str, learning_rate: float, *, total_steps: int, warmup_steps: int = 0) -> optax.Schedule:
    """`learning_rate` held constant, cosine-decayed over `total_steps`, or after a linear warmup."""
    check_learning_rate(learning_rate)
    if name == "constant":
        return optax.constant_schedule(learning_rate)
    if name == "cosine":
        return optax.cosine_decay_schedule(learning_rate, max(total_steps, 1))
    if name == "warmup_cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, learning_rate, warmup_steps=max(warmup_steps, 1), decay_steps=max(total_steps, warmup_steps + 1)
        )
    raise UserError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def create_optimizer(
    name: str, learning_rate: float | optax.Schedule, *, weight_decay: float = 0.0
) -> optax.GradientTransformation:
    """The optimizer `name` (one of OPTIMIZERS) at `learning_rate` with decoupled `weight_decay`."""
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; choose one of {', '.join(sorted(OPTIMIZERS))}")
    if not callable(learning_rate):
        check_learning_rate(learning_rate)
    if weight_decay < 0:
        raise UserError(f"weight_decay={weight_decay} must be ≥ 0; pass e.g. --config.weight_decay=0.0001")
    return OPTIMIZERS[name](learning_rate, weight_decay)
