"""Second-order methods for small, full-batch problems (lecture 7): Newton's method and L-BFGS.

Both take a loss of the parameters alone, `loss_fn(params) -> scalar`; close over the data (the
whole training set: neither method works with noisy minibatch gradients).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

LossFn = Callable[[Any], jax.Array]


def newton_step(loss_fn: LossFn, params: Any, *, damping: float = 0.0) -> Any:
    """One step of Newton's method: θ ← θ − (H + λI)⁻¹ ∇f(θ), H = `jax.hessian` of f at θ.

    It jumps to the stationary point of the local quadratic model, so one step solves a quadratic
    with a positive-definite Hessian exactly.

    Why it fails elsewhere:
    - At and near a saddle point H has negative eigenvalues. The step still goes to the
      stationary point of the quadratic model, which along those directions is a *maximum*:
      Newton's method is attracted to saddle points (and maxima) as much as to minima, while
      gradient descent moves away from them. Where H is singular the step is undefined. A
      damping λ larger than −λ_min(H) (a trust region, or Levenberg–Marquardt) is the usual
      repair.
    - At scale the Hessian of n parameters has n² entries and solving with it costs O(n³):
      for ResNet-50 (n ≈ 25.6M) that is 6.5·10¹⁴ numbers, about 2.6 PB in float32. Quasi-Newton
      methods such as L-BFGS keep a low-rank estimate instead; with minibatches the noisy
      curvature makes even that unreliable, which is why deep learning uses first-order methods.
    """
    flat, unravel = ravel_pytree(params)

    def flat_loss(x):
        return loss_fn(unravel(x))

    gradient = jax.grad(flat_loss)(flat)
    hessian = jax.hessian(flat_loss)(flat)
    if damping:
        hessian = hessian + damping * jnp.eye(flat.size, dtype=hessian.dtype)
    return unravel(flat - jnp.linalg.solve(hessian, gradient))


def newton(
    loss_fn: LossFn, params: Any, *, num_steps: int = 10, damping: float = 0.0
) -> tuple[Any, jax.Array]:
    """`num_steps` Newton steps; returns the parameters and the loss before each step."""

    def step(params, _):
        return newton_step(loss_fn, params, damping=damping), loss_fn(params)

    return jax.lax.scan(step, params, None, length=num_steps)


class LbfgsResult(NamedTuple):
    """What `lbfgs_minimize` returns."""

    params: Any
    losses: jax.Array  # (max_steps,): the loss before each step taken, NaN after the last
    num_steps: jax.Array  # steps taken
    grad_norm: jax.Array  # ‖∇f‖ at the returned parameters' last evaluation


def lbfgs_minimize(
    loss_fn: LossFn,
    params: Any,
    *,
    max_steps: int = 100,
    tol: float = 1e-6,
    memory_size: int = 10,
) -> LbfgsResult:
    """Minimise a full-batch loss with `optax.lbfgs` (zoom line search) until ‖∇f‖ < `tol`.

    The loop is one `lax.while_loop`, so the whole fit compiles once; jit the caller.
    """
    solver = optax.lbfgs(memory_size=memory_size)
    value_and_grad = optax.value_and_grad_from_state(loss_fn)
    losses = jnp.full((max_steps,), jnp.nan, dtype=jnp.result_type(float))

    def step(carry):
        params, state, losses = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = solver.update(
            grad, state, params, value=value, grad=grad, value_fn=loss_fn
        )
        count = optax.tree.get(state, "count")
        losses = losses.at[count - 1].set(value.astype(losses.dtype))
        return optax.apply_updates(params, updates), state, losses

    def keep_going(carry):
        _, state, _ = carry
        count = optax.tree.get(state, "count")
        grad_norm = optax.tree.norm(optax.tree.get(state, "grad"))
        return (count == 0) | ((count < max_steps) & (grad_norm >= tol))

    params, state, losses = jax.lax.while_loop(
        keep_going, step, (params, solver.init(params), losses)
    )
    return LbfgsResult(
        params=params,
        losses=losses,
        num_steps=optax.tree.get(state, "count"),
        grad_norm=optax.tree.norm(optax.tree.get(state, "grad")),
    )
