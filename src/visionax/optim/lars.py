"""LARS (You et al., 2017) as SimCLR trains with it.

For each parameter tensor θ that the mask selects, with gradient g, weight decay λ, trust
coefficient η and learning rate ε:

    g ← g + λθ
    g ← η ‖θ‖/‖g‖ · g        (the trust ratio; 1 where ‖θ‖ = 0 or ‖g‖ = 0)
    v ← βv − εg,  θ ← θ + v  (momentum with the learning rate inside the velocity)

Tensors the mask leaves out get neither weight decay nor the trust ratio: plain momentum SGD.
This is SimCLR's `LARSOptimizer` (its `exclude_from_weight_decay` and
`exclude_from_layer_adaptation` both set to batch normalisation and biases).

The norms are per tensor: under `shard_map` or `pmap` with replicated parameters each device
computes the same update. (Parameters *sharded* across devices would need the norms all-reduced.)
"""

from __future__ import annotations

from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import optax

from visionax.optim.first_order import (
    ScalarOrSchedule,
    scale_by_learning_rate,
    scale_by_momentum,
)

#: Path fragments that mark a parameter as excluded by `lars_mask`.
EXCLUDED_NAMES = ("bias", "scale")


def _key_name(key: Any) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(key, attribute):
            return str(getattr(key, attribute))
    return str(key)


def lars_mask(params: Any) -> Any:
    """The default LARS mask: True for the tensors that get weight decay and the trust ratio.

    A leaf is excluded (False) when any key on its path contains "bias" or "scale" (Flax's names
    for biases and for the BatchNorm/LayerNorm scale), case-insensitive, or when it has at most
    one dimension (every bias and normalisation parameter, and any scalar such as a learned
    temperature). Convolution and dense kernels remain.
    """

    def selected(path, leaf) -> bool:
        names = [_key_name(key).lower() for key in path]
        if any(excluded in name for name in names for excluded in EXCLUDED_NAMES):
            return False
        return jnp.ndim(leaf) > 1

    return jax.tree_util.tree_map_with_path(selected, params)


def add_decayed_weights(*, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """u ← u + λθ (L2 weight decay added to the gradient)."""

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("add_decayed_weights needs the parameters: call update(g, state, params)")
        updates = jax.tree.map(lambda u, p: u + weight_decay * p, updates, params)
        return updates, state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def scale_by_trust_ratio(
    *, trust_coefficient: float = 0.001, eps: float = 0.0
) -> optax.GradientTransformation:
    """u ← η ‖θ‖/(‖u‖ + eps) · u per tensor; the ratio is 1 where ‖θ‖ = 0 or ‖u‖ = 0."""

    def scale(update, param):
        param_norm = jnp.sqrt(jnp.sum(jnp.square(param)))
        update_norm = jnp.sqrt(jnp.sum(jnp.square(update)))
        ratio = trust_coefficient * param_norm / (update_norm + eps)
        ratio = jnp.where((param_norm > 0) & (update_norm > 0), ratio, 1.0)
        return update * ratio.astype(update.dtype)

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("scale_by_trust_ratio needs the parameters: call update(g, state, params)")
        return jax.tree.map(scale, updates, params), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def lars(
    learning_rate: ScalarOrSchedule,
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-6,
    trust_coefficient: float = 0.001,
    mask: Union[Any, Callable[[Any], Any], None] = lars_mask,
) -> optax.GradientTransformation:
    """LARS with momentum, weight decay and the trust ratio applied where `mask` is True.

    `mask` is a pytree of booleans matching the parameters (or a prefix of them), or a function
    of the parameters returning one; the default `lars_mask` excludes biases and normalisation
    parameters (see there); `None` applies weight decay and the trust ratio to every tensor.

    Optax twin: `optax.lars(learning_rate, weight_decay=weight_decay, weight_decay_mask=mask,
    trust_coefficient=trust_coefficient, trust_ratio_mask=mask, momentum=momentum)`, the same rule
    (learning rate inside the velocity, also under a schedule).
    """
    layer_adaptation = optax.chain(
        add_decayed_weights(weight_decay=weight_decay),
        scale_by_trust_ratio(trust_coefficient=trust_coefficient),
    )
    if mask is not None:
        layer_adaptation = optax.masked(layer_adaptation, mask)
    return optax.chain(
        layer_adaptation,
        scale_by_learning_rate(learning_rate),
        scale_by_momentum(beta=momentum),
    )
