"""Weight penalties of lecture 3 over a params pytree, with a mask of the leaves they apply to.

By default (`decay_mask`) the penalties apply to weight matrices and convolution kernels only:
biases and normalisation parameters (scale and bias of BatchNorm/LayerNorm/GroupNorm/...) are
excluded, as is usual for weight decay. Pass `mask` (a pytree of bools with the structure of the
params, or a function params -> such a pytree, as `optax.masked` takes) to choose otherwise.
The strength λ is applied by the caller: loss = data_loss + λ · l2(params).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

PyTree = Any
Mask = PyTree | Callable[[PyTree], PyTree] | None

__all__ = ["decay_mask", "l2", "l1", "elastic_net"]

_EXCLUDED_NAMES = {"bias", "b", "scale", "beta", "gamma"}


def _key_name(entry: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _is_weight(path: tuple, leaf: Any) -> bool:
    names = [_key_name(entry) for entry in path]
    if any("norm" in name.lower() for name in names):
        return False  # any parameter of a normalisation layer
    last = names[-1] if names else ""
    if last.lower() in _EXCLUDED_NAMES or (last[:1] == "b" and last[1:].isdigit()):
        return False  # bias: "bias", "b", "b1", "b2", ...
    return jnp.ndim(leaf) >= 2  # weight matrices and kernels; any other vector (a bias, a scale) is excluded


def decay_mask(params: PyTree) -> PyTree:
    """True for weight matrices/kernels; False for biases, normalisation parameters and other vectors.

    A leaf is excluded when its name is `bias`, `b`, `b<k>`, `scale`, `beta` or `gamma`, when any
    module on its path has `norm` in its name (BatchNorm_0, LayerNorm_1, GroupNorm, ...), or when
    it has fewer than two dimensions.
    """
    return jax.tree_util.tree_map_with_path(_is_weight, params)


def _masked_sum(fn: Callable[[jax.Array], jax.Array], params: PyTree, mask: Mask) -> jax.Array:
    if mask is None:
        mask = decay_mask(params)
    elif callable(mask):
        mask = mask(params)
    terms = jax.tree.map(lambda leaf, keep: jnp.sum(fn(leaf)) if keep else jnp.zeros(()), params, mask)
    return sum(jax.tree.leaves(terms), start=jnp.zeros(()))


def l2(params: PyTree, mask: Mask = None) -> jax.Array:
    """L2 penalty R(W) = Σ_k Σ_l W_{k,l}² over the masked leaves (no factor ½)."""
    return _masked_sum(jnp.square, params, mask)


def l1(params: PyTree, mask: Mask = None) -> jax.Array:
    """L1 penalty R(W) = Σ_k Σ_l |W_{k,l}| over the masked leaves."""
    return _masked_sum(jnp.abs, params, mask)


def elastic_net(params: PyTree, beta: float = 1.0, mask: Mask = None) -> jax.Array:
    """Elastic net (L1 + L2) R(W) = Σ_k Σ_l β W_{k,l}² + |W_{k,l}| over the masked leaves."""
    return _masked_sum(lambda w: beta * jnp.square(w) + jnp.abs(w), params, mask)
