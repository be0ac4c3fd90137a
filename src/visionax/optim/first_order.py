"""First-order optimizers written by hand as Optax transformations (lecture 7).

Each public optimizer is an `optax.chain` of small `scale_by_*` pieces, written in Optax's own
style: a factory with keyword-only options returning pure `init`/`update` closures over a
`NamedTuple` state. They compose with any Optax transformation and run unchanged under `jax.jit`,
`jax.shard_map` and `jax.pmap` (every rule here is elementwise, so replicated parameters and
all-reduced gradients give the same update on every device).

Notation of the lecture: g the gradient, ε the learning rate (a float or an Optax schedule of the
update count t = 0, 1, 2, ...), δ the small constant `eps`. Updates are what is *added* to θ
(`optax.apply_updates`).

Where a rule differs from the Optax function with the same name, the docstring says how; the tests
compare each rule with the Optax configuration that computes it, or with a NumPy reference.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import optax

from visionax.errors import UserError

Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


def _check_learning_rate(learning_rate: ScalarOrSchedule) -> None:
    if isinstance(learning_rate, numbers.Real) and not learning_rate >= 0:
        raise UserError(
            f"learning rate must be >= 0, got {learning_rate}; pass a non-negative learning rate"
        )


# ----------------------------------------------------------------------------------------------
# scale_by_* pieces


class ScaleByLearningRateState(NamedTuple):
    """The number of updates done so far (t), read by a learning-rate schedule."""

    count: jax.Array


def scale_by_learning_rate(
    learning_rate: ScalarOrSchedule, *, flip_sign: bool = True
) -> optax.GradientTransformation:
    """u ← −ε_t u (or +ε_t u with `flip_sign=False`); ε a float or a schedule of t.

    A float keeps no state (`optax.EmptyState`); a schedule keeps the update count t, starting
    at 0 for the first update, as Optax does.
    """
    _check_learning_rate(learning_rate)
    sign = -1.0 if flip_sign else 1.0

    if not callable(learning_rate):

        def init_constant(params):
            del params
            return optax.EmptyState()

        def update_constant(updates, state, params=None):
            del params
            step = sign * learning_rate
            updates = jax.tree.map(lambda u: jnp.asarray(step, u.dtype) * u, updates)
            return updates, state

        return optax.GradientTransformation(init_constant, update_constant)

    def init_fn(params):
        del params
        return ScaleByLearningRateState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        step = sign * learning_rate(state.count)
        updates = jax.tree.map(lambda u: jnp.asarray(step, u.dtype) * u, updates)
        return updates, ScaleByLearningRateState(count=optax.safe_increment(state.count))

    return optax.GradientTransformation(init_fn, update_fn)


class MomentumState(NamedTuple):
    """The velocity v (same structure and dtypes as the parameters)."""

    velocity: Any


def scale_by_momentum(*, beta: float = 0.9) -> optax.GradientTransformation:
    """v ← βv + u, output v (v starts at 0).

    Placed after `scale_by_learning_rate` (u = −εg) this is the lecture's v ← βv − εg: the
    learning rate sits inside the velocity.
    """

    def init_fn(params):
        return MomentumState(velocity=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        velocity = jax.tree.map(lambda v, u: beta * v + u, state.velocity, updates)
        return velocity, MomentumState(velocity=velocity)

    return optax.GradientTransformation(init_fn, update_fn)


def scale_by_nesterov(*, beta: float = 0.9) -> optax.GradientTransformation:
    """v_new ← βv_old + u, output v_new + β(v_new − v_old) (v starts at 0).

    After `scale_by_learning_rate` this is Nesterov's look-ahead rule v ← βv − ε∇f(θ + βv)
    rewritten in the variable θ̃ = θ + βv, so that it needs only the gradient at the point the
    parameters hold: θ̃ ← θ̃ + v_new + β(v_new − v_old).
    """

    def init_fn(params):
        return MomentumState(velocity=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        velocity = jax.tree.map(lambda v, u: beta * v + u, state.velocity, updates)
        # v_new + β(v_new − v_old) = (βv_old + u) + βv_new − βv_old = u + βv_new. Written
        # without v_old, the new velocity overwrites the old one in place (no copy of the state).
        updates = jax.tree.map(lambda u, v: u + beta * v, updates, velocity)
        return updates, MomentumState(velocity=velocity)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdagradState(NamedTuple):
    """r: the running sum of squared gradients."""

    sum_of_squares: Any


def scale_by_adagrad(*, eps: float = 1e-7) -> optax.GradientTransformation:
    """r ← r + g⊙g (r starts at 0), output g/(√r + δ)."""

    def init_fn(params):
        return ScaleByAdagradState(sum_of_squares=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        sum_of_squares = jax.tree.map(lambda r, g: r + g * g, state.sum_of_squares, updates)
        updates = jax.tree.map(lambda g, r: g / (jnp.sqrt(r) + eps), updates, sum_of_squares)
        return updates, ScaleByAdagradState(sum_of_squares=sum_of_squares)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByRmspropState(NamedTuple):
    """r: the exponential moving average of squared gradients."""

    nu: Any


def scale_by_rmsprop(*, decay: float = 0.9, eps: float = 1e-8) -> optax.GradientTransformation:
    """r ← ρr + (1−ρ) g⊙g (r starts at 0), output g/(√r + δ)."""

    def init_fn(params):
        return ScaleByRmspropState(nu=jax.tree.map(jnp.zeros_like, params))

    def update_fn(updates, state, params=None):
        del params
        nu = jax.tree.map(lambda r, g: decay * r + (1.0 - decay) * (g * g), state.nu, updates)
        updates = jax.tree.map(lambda g, r: g / (jnp.sqrt(r) + eps), updates, nu)
        return updates, ScaleByRmspropState(nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


class ScaleByAdamState(NamedTuple):
    """t, the first moment s and the second moment r."""

    count: jax.Array
    mu: Any
    nu: Any


def scale_by_adam(
    *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """s ← ρ1 s + (1−ρ1) g, r ← ρ2 r + (1−ρ2) g⊙g, output ŝ/(√r̂ + δ).

    ŝ = s/(1−ρ1^t) and r̂ = r/(1−ρ2^t) remove the bias of starting both moments at 0; t counts
    updates from 1.
    """

    def init_fn(params):
        return ScaleByAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, params),
            nu=jax.tree.map(jnp.zeros_like, params),
        )

    def update_fn(updates, state, params=None):
        del params
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda s, g: b1 * s + (1.0 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda r, g: b2 * r + (1.0 - b2) * (g * g), state.nu, updates)
        # The corrections are computed in the count's default float precision, then cast, so
        # that 1 − ρ^t is not rounded to 0 in low precision.
        correction1 = 1.0 - b1**count
        correction2 = 1.0 - b2**count

        def direction(s, r):
            s_hat = s / correction1.astype(s.dtype)
            r_hat = r / correction2.astype(r.dtype)
            return s_hat / (jnp.sqrt(r_hat) + eps)

        updates = jax.tree.map(direction, mu, nu)
        return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------------------------
# Optimizers


def sgd(learning_rate: ScalarOrSchedule) -> optax.GradientTransformation:
    """Stochastic gradient descent: θ ← θ − εg.

    Optax twin: `optax.sgd(learning_rate)` (the same rule, also under a schedule).
    """
    return scale_by_learning_rate(learning_rate)


def momentum(learning_rate: ScalarOrSchedule, *, beta: float = 0.9) -> optax.GradientTransformation:
    """SGD with momentum: v ← βv − εg, θ ← θ + v.

    Optax twin: `optax.sgd(learning_rate, momentum=beta)`, which keeps t ← βt + g and steps
    −ε t; with a constant ε the two are the same (v = −εt). Under a schedule they differ: here
    each step's ε_t enters the velocity when the gradient does (v = −Σ β^{t−k} ε_k g_k), while
    Optax multiplies the whole velocity by the current ε_t.

    With a constant ε the velocity is kept in gradient units, m = −v/ε (m ← βm + g, step −εm):
    the same rule, since −ε(βm + g) = βv − εg. Scaling after the velocity lets XLA fold ε into
    the parameter update; a bare θ + v compiles on XLA:CPU to a loop about 10% slower than
    θ + c·v over the same memory (measured by `python -m bench.optim`).
    """
    if callable(learning_rate):
        return optax.chain(scale_by_learning_rate(learning_rate), scale_by_momentum(beta=beta))
    return optax.chain(scale_by_momentum(beta=beta), scale_by_learning_rate(learning_rate))


def nesterov(learning_rate: ScalarOrSchedule, *, beta: float = 0.9) -> optax.GradientTransformation:
    """Nesterov momentum: v ← βv − ε∇f(θ + βv), stepped as θ̃ ← θ̃ + v_new + β(v_new − v_old).

    The parameters held are θ̃ = θ + βv, so one gradient (at θ̃) per step suffices.
    Optax twin: `optax.sgd(learning_rate, momentum=beta, nesterov=True)`, the same rule with a
    constant ε; under a schedule Optax's ε sits outside the velocity (see `momentum`).
    """
    return optax.chain(scale_by_learning_rate(learning_rate), scale_by_nesterov(beta=beta))


def adagrad(learning_rate: ScalarOrSchedule, *, eps: float = 1e-7) -> optax.GradientTransformation:
    """AdaGrad: r ← r + g⊙g (r starts at 0), θ ← θ − ε g/(√r + δ).

    Differs from `optax.adagrad`, which starts r at `initial_accumulator_value` (0.1 by default),
    puts δ inside the root (g/√(r + δ)) and outputs 0 where r = 0. With
    `initial_accumulator_value=0, eps=0` Optax computes this rule with δ = 0.
    """
    return optax.chain(scale_by_adagrad(eps=eps), scale_by_learning_rate(learning_rate))


def rmsprop(
    learning_rate: ScalarOrSchedule, *, decay: float = 0.9, eps: float = 1e-8
) -> optax.GradientTransformation:
    """RMSProp: r ← ρr + (1−ρ) g⊙g (r starts at 0), θ ← θ − ε g/(√r + δ).

    `optax.rmsprop` puts δ inside the root by default; its twin here is
    `optax.rmsprop(learning_rate, decay=decay, eps=eps, eps_in_sqrt=False)`.
    """
    return optax.chain(
        scale_by_rmsprop(decay=decay, eps=eps), scale_by_learning_rate(learning_rate)
    )


def adam(
    learning_rate: ScalarOrSchedule, *, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """Adam: θ ← θ − ε ŝ/(√r̂ + δ) with bias-corrected moments (see `scale_by_adam`).

    Optax twin: `optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)` (the same rule).
    """
    return optax.chain(scale_by_adam(b1=b1, b2=b2, eps=eps), scale_by_learning_rate(learning_rate))
