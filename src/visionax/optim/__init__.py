"""Optimizers written by hand as Optax transformations, second-order methods and averaging.

- `visionax.optim.first_order`: sgd, momentum, nesterov, adagrad, rmsprop, adam and their
  `scale_by_*` pieces.
- `visionax.optim.lars`: LARS as SimCLR uses it, and its default mask.
- `visionax.optim.second_order`: Newton's method (`jax.hessian`) and L-BFGS (`optax.lbfgs`).
- `visionax.optim.averaging`: Polyak averaging (EMA of the parameters).

`get(name, learning_rate, **options)` builds an optimizer from its name (for configs).
"""

from __future__ import annotations

from typing import Any

import optax

from visionax import registry
from visionax.optim.averaging import PolyakAverage, PolyakState, polyak_average
from visionax.optim.first_order import (
    MomentumState,
    ScalarOrSchedule,
    ScaleByAdagradState,
    ScaleByAdamState,
    ScaleByLearningRateState,
    ScaleByRmspropState,
    adagrad,
    adam,
    momentum,
    nesterov,
    rmsprop,
    scale_by_adagrad,
    scale_by_adam,
    scale_by_learning_rate,
    scale_by_momentum,
    scale_by_nesterov,
    scale_by_rmsprop,
    sgd,
)
from visionax.optim.lars import add_decayed_weights, lars, scale_by_trust_ratio
from visionax.optim.second_order import LbfgsResult, lbfgs_minimize, newton, newton_step

#: The first-order optimizers by name.
OPTIMIZERS = {
    "sgd": sgd,
    "momentum": momentum,
    "nesterov": nesterov,
    "adagrad": adagrad,
    "rmsprop": rmsprop,
    "adam": adam,
    "lars": lars,
}


def get(name: str, learning_rate: ScalarOrSchedule, **options: Any) -> optax.GradientTransformation:
    """The optimizer called `name` (a key of `OPTIMIZERS`); UserError for an unknown name."""
    return registry.lookup(OPTIMIZERS, name, "optimizer")(learning_rate, **options)


__all__ = [
    "OPTIMIZERS",
    "LbfgsResult",
    "MomentumState",
    "PolyakAverage",
    "PolyakState",
    "ScalarOrSchedule",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByLearningRateState",
    "ScaleByRmspropState",
    "adagrad",
    "adam",
    "add_decayed_weights",
    "get",
    "lars",
    "lbfgs_minimize",
    "momentum",
    "nesterov",
    "newton",
    "newton_step",
    "polyak_average",
    "rmsprop",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_nesterov",
    "scale_by_rmsprop",
    "scale_by_trust_ratio",
    "sgd",
]
