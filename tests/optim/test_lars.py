"""visionax.optim.lars against optax.lars and a float64 NumPy reference, its mask (the project's one
weight-decay rule), sharded, and converging."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.optim.cases import (
    CASES,
    LR,
    TOLERANCES,
    assert_close,
    check_against_optax_and_numpy,
    check_convergence,
    check_no_recompilation,
    check_shard_map_and_pmap_match_jit,
    make_problem,
    run,
)
from visionax import optim
from visionax.losses.penalties import decay_mask

LARS_CASES = [name for name in CASES if name.startswith("lars")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
@pytest.mark.parametrize("name", LARS_CASES)
def test_against_optax_and_numpy(name, scheduled, dtype):
    check_against_optax_and_numpy(name, scheduled, dtype)


@pytest.mark.parametrize("name", LARS_CASES)
def test_no_recompilation_on_second_update(name):
    check_no_recompilation(name)


@pytest.mark.parametrize("name", LARS_CASES)
def test_shard_map_and_pmap_match_jit(name):
    """Replicated parameters, per-device gradients averaged with pmean: 8 devices == 1 device."""
    check_shard_map_and_pmap_match_jit(name)


@pytest.mark.parametrize("name", ["lars"])
def test_converges_on_quadratic_and_rosenbrock(name):
    check_convergence(name)


def test_lars_default_mask_is_the_weight_decay_mask():
    """LARS decays and adapts exactly the tensors `decay_mask` selects: kernels, not biases,
    normalisation parameters or other vectors."""
    params = {
        "Conv_0": {"kernel": jnp.ones((3, 3, 3, 8)), "bias": jnp.ones(8)},
        "BatchNorm_0": {"scale": jnp.ones(8), "bias": jnp.ones(8)},
        "LayerNorm_0": {"scale": jnp.ones(8)},
        "Dense_0": {"kernel": jnp.ones((8, 10)), "bias": jnp.ones(10)},
        "embedding": jnp.ones(10),
        "temperature": jnp.ones(()),
    }
    assert decay_mask(params) == {
        "Conv_0": {"kernel": True, "bias": False},
        "BatchNorm_0": {"scale": False, "bias": False},
        "LayerNorm_0": {"scale": False},
        "Dense_0": {"kernel": True, "bias": False},
        "embedding": False,
        "temperature": False,
    }
    grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), params)
    default = optim.lars(LR, weight_decay=0.5).update(grads, optim.lars(LR, weight_decay=0.5).init(params), params)[0]
    masked = optim.lars(LR, weight_decay=0.5, mask=decay_mask)
    explicit = masked.update(grads, masked.init(params), params)[0]
    chex.assert_trees_all_close(default, explicit)
    unmasked = optim.lars(LR, weight_decay=0.5, mask=None)
    everything = unmasked.update(grads, unmasked.init(params), params)[0]
    assert not np.allclose(default["Conv_0"]["bias"], everything["Conv_0"]["bias"])


def test_lars_excluded_leaves_get_plain_momentum():
    """Masked-out leaves follow v ← βv − εg exactly: no weight decay, no trust ratio."""
    _, _, params, grads = make_problem(np.float32)
    lars = run(optim.lars(LR, weight_decay=0.5), params, grads)
    plain = run(optim.momentum(LR, beta=0.9), params, grads)
    for path in (("conv", "bias"), ("bn", "scale"), ("bn", "bias"), ("temperature",)):
        a, b = lars, plain
        for key in path:
            a, b = a[key], b[key]
        assert_close(a, b, TOLERANCES["optax"][np.float32])
    assert not np.allclose(lars["dense"]["kernel"], plain["dense"]["kernel"], atol=1e-3)
