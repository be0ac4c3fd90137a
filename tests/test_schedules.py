"""visionax.schedules against closed forms (float64 NumPy) and against Optax's twins."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax import schedules
from visionax.errors import UserError

STEPS = np.arange(0, 1200)
LR = 0.1
# Optax computes ε0/2·(1 + cos) and ε0·(1 − t/T) in float32, which cancel near the end: against
# Optax the absolute tolerance is float32's resolution at the peak, 2e-8 (= 2e-7·ε0).
TWIN_ATOL = 2e-8


def values(schedule, steps=STEPS):
    """The schedule at each step, evaluated as optimizers do: jitted on int32 counts."""
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)), np.float64)


def test_inverse_sqrt():
    t = np.maximum(STEPS, 1)
    np.testing.assert_allclose(values(schedules.inverse_sqrt(LR)), LR / np.sqrt(t), rtol=1e-6)


def test_step_decay_at_epochs_30_60_90():
    steps_per_epoch = 10
    schedule = schedules.step_decay(LR, [30, 60, 90], steps_per_epoch=steps_per_epoch)
    epoch = STEPS // steps_per_epoch
    closed_form = LR * 0.1 ** ((epoch >= 30).astype(int) + (epoch >= 60) + (epoch >= 90))
    np.testing.assert_allclose(values(schedule), closed_form, rtol=1e-6)
    twin = optax.piecewise_constant_schedule(LR, {300: 0.1, 600: 0.1, 900: 0.1})
    np.testing.assert_allclose(values(schedule), values(twin), rtol=1e-6)
    assert values(schedule, [299, 300])[1] == pytest.approx(0.1 * LR, rel=1e-6)


def test_cosine():
    total = 1000
    t = np.minimum(STEPS, total)
    closed_form = LR / 2 * (1 + np.cos(np.pi * t / total))
    schedule = schedules.cosine(LR, total)
    np.testing.assert_allclose(values(schedule), closed_form, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(
        values(schedule), values(optax.cosine_decay_schedule(LR, total)), rtol=1e-5, atol=TWIN_ATOL
    )


def test_linear():
    total = 1000
    closed_form = LR * (1 - np.minimum(STEPS, total) / total)
    schedule = schedules.linear(LR, total)
    np.testing.assert_allclose(values(schedule), closed_form, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(
        values(schedule), values(optax.linear_schedule(LR, 0.0, total)), rtol=1e-6, atol=TWIN_ATOL
    )


WARMUP = 100


@pytest.mark.parametrize(
    "name, after, closed_form_after",
    [
        ("cosine", schedules.cosine(LR, 900), lambda t: LR / 2 * (1 + np.cos(np.pi * np.minimum(t, 900) / 900))),
        ("linear", schedules.linear(LR, 900), lambda t: LR * (1 - np.minimum(t, 900) / 900)),
        ("step", schedules.step_decay(LR, [300, 600]), lambda t: LR * 0.1 ** ((t >= 300).astype(int) + (t >= 600))),
        ("inverse_sqrt", schedules.inverse_sqrt(LR), lambda t: LR / np.sqrt(np.maximum(t, 1))),
        ("constant", LR, lambda t: np.full(t.shape, LR)),
    ],
)
def test_warmup_joined_to_any_schedule(name, after, closed_form_after):
    schedule = schedules.warmup(after, WARMUP)
    closed_form = np.where(
        STEPS < WARMUP, LR * STEPS / WARMUP, closed_form_after(np.maximum(STEPS - WARMUP, 0))
    )
    np.testing.assert_allclose(values(schedule), closed_form, rtol=1e-5, atol=1e-9)
    if callable(after):
        twin = optax.join_schedules([optax.linear_schedule(0.0, LR, WARMUP), after], [WARMUP])
        np.testing.assert_allclose(values(schedule), values(twin), rtol=1e-5, atol=TWIN_ATOL)


def test_warmup_from_a_non_zero_value():
    schedule = schedules.warmup(schedules.cosine(LR, 500), 50, init_value=0.01)
    np.testing.assert_allclose(
        values(schedule, np.arange(51)), 0.01 + (LR - 0.01) * np.arange(51) / 50, rtol=1e-6
    )


def test_warmup_cosine_matches_optax():
    schedule = schedules.warmup_cosine(LR, WARMUP, 1000)
    twin = optax.warmup_cosine_decay_schedule(0.0, LR, WARMUP, 1000)
    np.testing.assert_allclose(values(schedule), values(twin), rtol=1e-5, atol=TWIN_ATOL)
    assert values(schedule, [WARMUP])[0] == pytest.approx(LR)
    assert values(schedule, [1000])[0] == pytest.approx(0.0, abs=1e-12)


def test_schedules_in_float64():
    with jax.enable_x64(True):
        schedule = schedules.warmup_cosine(LR, WARMUP, 1000)
        t = np.arange(WARMUP, 1000)
        closed_form = LR / 2 * (1 + np.cos(np.pi * (t - WARMUP) / (1000 - WARMUP)))
        np.testing.assert_allclose(values(schedule, t), closed_form, rtol=1e-12, atol=1e-16)


def test_linear_scaling_rule():
    assert schedules.linear_scaling_rule(0.1, 256) == pytest.approx(0.1)
    assert schedules.linear_scaling_rule(0.1, 8192) == pytest.approx(3.2)  # Goyal et al.
    assert schedules.linear_scaling_rule(0.3, 4096) == pytest.approx(4.8)  # SimCLR with LARS


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: schedules.cosine(-0.1, 10), "learning rate must be >= 0"),
        (lambda: schedules.linear(0.1, 0), "decay_steps must be > 0"),
        (lambda: schedules.warmup_cosine(0.1, 100, 100), "total_steps .100. must exceed warmup_steps"),
        (lambda: schedules.linear_scaling_rule(0.1, 0), "batch_size must be > 0"),
    ],
)
def test_bad_values_are_user_errors(build, message):
    with pytest.raises(UserError, match=message):
        build()
