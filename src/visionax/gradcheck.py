"""Numeric gradient checking: centred finite differences in float64 against `jax.grad`.

The numeric derivative of a scalar function f along coordinate i is the centred difference
(f(x + h e_i) − f(x − h e_i)) / 2h, and the check reports the relative error
|a − n| / max(|a|, |n|) of the analytic gradient a against the numeric one n (entries far smaller than
the rest of their array are measured against a floor, see `relative_error`).

Everything is computed with 64-bit floats enabled (`jax.enable_x64`): the inputs are cast to
float64, so a function written for float32 is checked in float64 and the finite differences are
accurate to about h² + 1e-16/h (h = 1e-5 by default). Typical values: below 1e-7 for a correct smooth gradient, 1e-2 or
more for a wrong one. Points within h of a kink (ReLU at 0, the hinge at its margin) give a larger
error by design of the test, not of the gradient: keep test inputs away from kinks.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

__all__ = ["numeric_grad", "relative_error", "check_grad", "assert_grad_close"]


def _to_f64(tree: PyTree) -> PyTree:
    return jax.tree.map(lambda leaf: np.array(leaf, dtype=np.float64, copy=True), tree)


def numeric_grad(f: Callable[[PyTree], Any], params: PyTree, h: float = 1e-5) -> PyTree:
    """Gradient of scalar `f` at `params` by centred differences (f(x+h e_i) − f(x−h e_i)) / 2h, in float64.

    `params` is any pytree of arrays; the result has its structure with float64 NumPy leaves.
    One pair of evaluations per coordinate: keep the inputs small.
    """
    with jax.enable_x64(True):
        params64 = _to_f64(params)
        leaves, treedef = jax.tree.flatten(params64)
        fn = jax.jit(lambda flat: f(jax.tree.unflatten(treedef, flat)))
        grads = []
        for index, leaf in enumerate(leaves):
            grad = np.zeros_like(leaf)
            flat_leaf = leaf.reshape(-1)
            flat_grad = grad.reshape(-1)
            for i in range(flat_leaf.size):
                original = flat_leaf[i]
                flat_leaf[i] = original + h
                plus = float(fn(leaves))
                flat_leaf[i] = original - h
                minus = float(fn(leaves))
                flat_leaf[i] = original
                flat_grad[i] = (plus - minus) / (2.0 * h)
            grads.append(grad)
        return jax.tree.unflatten(treedef, grads)


def relative_error(analytic: PyTree, numeric: PyTree, floor: float = 1e-3) -> float:
    """Largest elementwise |a − n| / max(|a|, |n|, floor · m) over all leaves, m the leaf's largest |a| or |n|.

    The floor keeps entries that are tiny next to the rest of their leaf (or exactly zero) from
    dividing rounding noise by ~0: they are judged against `floor` times the leaf's scale.
    """

    def leaf(a, n):
        a, n = np.asarray(a, np.float64), np.asarray(n, np.float64)
        if a.size == 0:
            return 0.0
        magnitude = np.maximum(np.abs(a), np.abs(n))
        denominator = np.maximum(magnitude, max(floor * float(magnitude.max()), 1e-300))
        return float(np.max(np.abs(a - n) / denominator))

    return float(max(jax.tree.leaves(jax.tree.map(leaf, analytic, numeric)), default=0.0))


def check_grad(f: Callable[[PyTree], Any], params: PyTree, h: float = 1e-5, floor: float = 1e-3) -> float:
    """Relative error between `jax.grad(f)` and the centred-difference gradient, both in float64."""
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), params)
        analytic = jax.tree.map(np.asarray, jax.jit(jax.grad(f))(params64))
    numeric = numeric_grad(f, params, h=h)
    return relative_error(analytic, numeric, floor=floor)


def assert_grad_close(
    f: Callable[[PyTree], Any], params: PyTree, tol: float = 1e-6, h: float = 1e-5, floor: float = 1e-3
) -> float:
    """Raise AssertionError when `check_grad(f, params)` exceeds `tol`; return the error otherwise."""
    error = check_grad(f, params, h=h, floor=floor)
    if not error <= tol:
        raise AssertionError(f"gradient check failed: relative error {error:.3e} > {tol:.1e}")
    return error
