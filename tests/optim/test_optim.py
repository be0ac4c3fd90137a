"""visionax.optim: optimizers by name."""

import chex
import numpy as np
import pytest

from tests.optim.cases import LR, make_problem, run
from visionax import optim
from visionax.errors import UserError


def test_get_builds_by_name_and_rejects_unknown_names():
    _, _, params, grads = make_problem(np.float32)
    chex.assert_trees_all_close(
        run(optim.get("adam", LR, b1=0.8), params, grads),
        run(optim.adam(LR, b1=0.8), params, grads),
    )
    with pytest.raises(UserError, match="unknown optimizer 'adamw'; choose one of sgd"):
        optim.get("adamw", LR)
    with pytest.raises(UserError, match="learning rate must be >= 0"):
        optim.sgd(-0.1)
