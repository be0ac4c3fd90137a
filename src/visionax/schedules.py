"""Learning-rate schedules (lecture 8) as Optax schedules: pure functions of the update count t.

Each returns a callable `schedule(t) -> ε_t` that works on Python ints and on traced int32
counts, so it can be passed as `learning_rate` to every optimizer in `visionax.optim` and in
Optax. t is the number of updates done before the current one (0 for the first update), as in
Optax. The formulas, with ε0 the initial (peak) value and T the decay length:

- `inverse_sqrt`:  ε0/√t (t taken as 1 at t = 0)
- `step_decay`:    ε0 · factor^(number of boundaries ≤ t), factor 0.1 (ResNet: epochs 30/60/90)
- `cosine`:        ε0/2 · (1 + cos(π t/T)) for t ≤ T, then 0
- `linear`:        ε0 (1 − t/T) for t ≤ T, then 0
- `warmup`:        linear from `init_value` to a schedule's first value over W steps, then that
                   schedule shifted by W steps: ε_t = s(t − W) for t ≥ W
- `warmup_cosine`: `warmup(cosine(peak, total − W), W)`: the cosine ends at `total_steps`
- `linear_scaling_rule`: base_lr × batch_size / 256 (Goyal et al., 2017), a number
"""

from __future__ import annotations

import math
from typing import Callable, Sequence, Union

import jax
import jax.numpy as jnp

from visionax.errors import UserError

Schedule = Callable[[Union[int, jax.Array]], jax.Array]


def _steps(count) -> jax.Array:
    return jnp.asarray(count).astype(jnp.result_type(float))


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise UserError(f"{name} must be > 0, got {value}; pass a positive {name}")


def _non_negative(name: str, value: float) -> None:
    if not value >= 0:
        raise UserError(f"{name} must be >= 0, got {value}; pass a non-negative {name}")


def constant(value: float) -> Schedule:
    """ε_t = value."""
    _non_negative("learning rate", value)

    def schedule(count):
        del count
        return jnp.full([], value, jnp.result_type(float))

    return schedule


def inverse_sqrt(init_value: float) -> Schedule:
    """ε_t = ε0/√t, with t taken as 1 at t = 0 (so ε_0 = ε_1 = ε0)."""
    _non_negative("learning rate", init_value)
    return lambda count: init_value * jax.lax.rsqrt(jnp.maximum(_steps(count), 1.0))


def step_decay(
    init_value: float,
    boundaries: Sequence[int],
    *,
    factor: float = 0.1,
    steps_per_epoch: int = 1,
) -> Schedule:
    """ε_t = ε0 · factor^k, k the number of boundaries b with t ≥ b · steps_per_epoch.

    ResNet's schedule: `step_decay(0.1, [30, 60, 90], steps_per_epoch=len(train) // batch)`.
    Optax twin: `optax.piecewise_constant_schedule(ε0, {b: factor for b in boundaries})`.
    """
    _non_negative("learning rate", init_value)
    _positive("steps_per_epoch", steps_per_epoch)
    steps = sorted(int(b) * int(steps_per_epoch) for b in boundaries)

    def schedule(count):
        t = _steps(count)
        passed = sum((t >= b).astype(t.dtype) for b in steps) if steps else 0.0 * t
        return init_value * jnp.power(factor, passed)

    return schedule


def cosine(init_value: float, decay_steps: int) -> Schedule:
    """ε_t = ε0/2 · (1 + cos(π min(t, T)/T)), T = `decay_steps`.

    Optax twin: `optax.cosine_decay_schedule(ε0, decay_steps)`.
    """
    _non_negative("learning rate", init_value)
    _positive("decay_steps", decay_steps)

    def schedule(count):
        t = jnp.clip(_steps(count), 0.0, decay_steps)
        # ½(1 + cos x) = cos²(x/2): the same value, never negative, exactly 0 at T in float32.
        return init_value * jnp.square(jnp.cos(0.5 * math.pi * t / decay_steps))

    return schedule


def linear(init_value: float, decay_steps: int) -> Schedule:
    """ε_t = ε0 (1 − min(t, T)/T), T = `decay_steps`.

    Optax twin: `optax.linear_schedule(ε0, 0.0, decay_steps)`.
    """
    _non_negative("learning rate", init_value)
    _positive("decay_steps", decay_steps)

    def schedule(count):
        t = jnp.clip(_steps(count), 0.0, decay_steps)
        # (T − t)/T rather than 1 − t/T: no cancellation near T, exactly 0 at T.
        return init_value * ((decay_steps - t) / decay_steps)

    return schedule


def warmup(
    schedule: Union[Schedule, float], warmup_steps: int, *, init_value: float = 0.0
) -> Schedule:
    """Linear warmup joined to `schedule` (a schedule or a constant learning rate).

    ε_t = init + (s(0) − init) · t/W for t < W, and s(t − W) for t ≥ W: the warmup climbs to the
    schedule's first value and the schedule then runs as if it started at step W.
    Optax twin: `optax.join_schedules([optax.linear_schedule(init, s(0), W), s], [W])`.
    """
    _non_negative("warmup_steps", warmup_steps)
    if not callable(schedule):
        schedule = constant(schedule)
    if warmup_steps == 0:
        return schedule
    peak = schedule(0)

    def joined(count):
        t = _steps(count)
        ramp = init_value + (peak - init_value) * jnp.clip(t, 0.0, warmup_steps) / warmup_steps
        after = schedule(jnp.maximum(jnp.asarray(count) - warmup_steps, 0))
        return jnp.where(t < warmup_steps, ramp, after)

    return joined


def warmup_cosine(peak_value: float, warmup_steps: int, total_steps: int) -> Schedule:
    """Linear warmup from 0 to `peak_value` over `warmup_steps`, then a cosine to 0 at `total_steps`.

    SimCLR's schedule. Optax twin:
    `optax.warmup_cosine_decay_schedule(0.0, peak_value, warmup_steps, total_steps)`.
    """
    if not total_steps > warmup_steps:
        raise UserError(
            f"total_steps ({total_steps}) must exceed warmup_steps ({warmup_steps}); "
            "train longer or warm up for fewer steps"
        )
    return warmup(cosine(peak_value, total_steps - warmup_steps), warmup_steps)


def linear_scaling_rule(base_lr: float, batch_size: int, *, base_batch_size: int = 256) -> float:
    """The linear scaling rule: base_lr × batch_size / 256 (Goyal et al., 2017)."""
    _non_negative("learning rate", base_lr)
    _positive("batch_size", batch_size)
    return base_lr * batch_size / base_batch_size

