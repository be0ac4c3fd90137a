"""visionax.optim.first_order (SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam) against Optax and a
float64 NumPy reference (tolerances in tests/optim/cases.py), without recompiling, sharded, and
converging."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.optim.cases import (
    CASES,
    CONVERGENCE,
    OPTAX_DIFFERS_UNDER_SCHEDULE,
    check_against_optax_and_numpy,
    check_convergence,
    check_no_recompilation,
    check_shard_map_and_pmap_match_jit,
    make_problem,
    optax_schedule,
    run,
)

FIRST_ORDER = [name for name in CASES if not name.startswith("lars")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
@pytest.mark.parametrize("name", FIRST_ORDER)
def test_against_optax_and_numpy(name, scheduled, dtype):
    check_against_optax_and_numpy(name, scheduled, dtype)


@pytest.mark.parametrize("name", sorted(OPTAX_DIFFERS_UNDER_SCHEDULE))
def test_momentum_under_schedule_differs_from_optax_as_documented(name):
    """Optax's ε_t multiplies the whole velocity; the lecture's rule (ours) does not."""
    ours, twin, _ = CASES[name]
    _, _, params, grads = make_problem(np.float32)
    schedule = optax_schedule()
    gap = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))),
        run(ours(schedule), params, grads),
        run(twin(schedule), params, grads),
    )
    assert max(jax.tree.leaves(gap)) > 1e-2


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_no_recompilation_on_second_update(name):
    check_no_recompilation(name)


@pytest.mark.parametrize("name", FIRST_ORDER)
def test_shard_map_and_pmap_match_jit(name):
    """Replicated parameters, per-device gradients averaged with pmean: 8 devices == 1 device."""
    check_shard_map_and_pmap_match_jit(name)


@pytest.mark.parametrize("name", [name for name in CONVERGENCE if name != "lars"])
def test_converges_on_quadratic_and_rosenbrock(name):
    check_convergence(name)
