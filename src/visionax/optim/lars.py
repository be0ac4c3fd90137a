"""LARS (You et al., 2017) as SimCLR trains with it.

For each parameter tensor θ that the mask selects, with gradient g, weight decay λ, trust
coefficient η and learning rate ε:

    g ← g + λθ
    g ← η ‖θ‖/‖g‖ · g        (the trust ratio; 1 where ‖θ‖ = 0 or ‖g‖ = 0)
    v ← βv − εg,  θ ← θ + v  (momentum with the learning rate inside the velocity)

Tensors the mask leaves out get neither weight decay nor the trust ratio: plain momentum SGD.
This is SimCLR's `LARSOptimizer` (its `exclude_from_weight_decay` and
`exclude_from_layer_adaptation` both set to batch normalisation and biases); the default mask is
the project's one weight-decay rule, `visionax.losses.penalties.decay_mask`.

The norms are per tensor: under `shard_map` or `pmap` with replicated parameters each device
computes the same update. (Parameters *sharded* across devices would need the norms all-reduced.)
"""

from __future__ import annotations

from typing import Any, Callable, Union

import jax
import jax.numpy as jnp
import optax

from visionax.losses.penalties import decay_mask
from visionax.optim.first_order import (
    ScalarOrSchedule,
    scale_by_learning_rate,
    scale_by_momentum,
)


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
    mask: Union[Any, Callable[[Any], Any], None] = decay_mask,
) -> optax.GradientTransformation:
    """LARS with momentum, weight decay and the trust ratio applied where `mask` is True.

    `mask` is a pytree of booleans matching the parameters (or a prefix of them), or a function
    of the parameters returning one; the default `decay_mask` excludes biases and normalisation
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
