"""visionax.optim.lars against optax.lars and a float64 NumPy reference, its mask (the project's one
weight-decay rule), sharded, and converging."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from tests.optim.cases import (ALL, CASES, CONVERGENCE, LR, OPTAX_DIFFERS_UNDER_SCHEDULE, QUADRATIC_MINIMUM,
                               TOLERANCES, _per_device_step, assert_close, learning_rates, make_problem,
                               minimise, optax_schedule, quadratic, reference, reference_options, rosenbrock,
                               run, schedule_for)
from visionax import optim
from visionax.losses.penalties import decay_mask

LARS_CASES = [name for name in CASES if name.startswith("lars")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
@pytest.mark.parametrize("name", LARS_CASES)
def test_against_optax_and_numpy(name, scheduled, dtype):
    ours, twin, _ = CASES[name]
    with jax.enable_x64(dtype == np.float64):
        schedule = schedule_for(dtype) if scheduled else None
        lr = schedule if scheduled else LR
        params64, grads64, params, grads = make_problem(dtype)
        actual = run(ours(lr), params, grads)
        chex.assert_trees_all_equal_dtypes(actual, jax.tree.map(lambda g: g[0], grads))
        rule, options = reference_options(name, params64)
        expected = reference(rule, params64, grads64, learning_rates(schedule), **options)
        assert_close(actual, expected, TOLERANCES["numpy"][dtype])
        if twin is not None and not (scheduled and name in OPTAX_DIFFERS_UNDER_SCHEDULE):
            assert_close(actual, run(twin(lr), params, grads), TOLERANCES["optax"][dtype])


@pytest.mark.parametrize("name", LARS_CASES)
def test_no_recompilation_on_second_update(name):
    chex.clear_trace_counter()
    tx = ALL[name](optax_schedule())
    _, _, params, grads = make_problem(np.float32)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def step(params, state, g):
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for t in range(3):
        params, state = step(params, state, jax.tree.map(lambda g: g[t], grads))
    assert step._cache_size() == 1


@pytest.mark.parametrize("name", LARS_CASES)
def test_shard_map_and_pmap_match_jit(name):
    """Replicated parameters, per-device gradients averaged with pmean: 8 devices == 1 device."""
    devices = jax.devices()
    assert len(devices) == 8
    tx = ALL[name](optax_schedule())
    rng = np.random.default_rng(1)
    _, _, params, _ = make_problem(np.float32)
    per_device = [
        jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(8,) + p.shape), jnp.float32), params)
        for _ in range(3)
    ]

    @jax.jit
    def single(params, state, g):
        updates, state = tx.update(jax.tree.map(lambda x: x.mean(0), g), state, params)
        return optax.apply_updates(params, updates), state

    mesh = Mesh(np.array(devices), ("data",))
    sharded = jax.jit(
        jax.shard_map(
            _per_device_step(tx, "data"),
            mesh=mesh,
            in_specs=(P(), P(), P("data")),
            out_specs=(P(), P()),
        )
    )
    pmapped = jax.pmap(
        lambda p, s, g: _per_device_step(tx, "data")(p, s, jax.tree.map(lambda x: x[None], g)),
        axis_name="data",
        in_axes=(None, None, 0),
    )

    expected = (params, tx.init(params))
    via_shard_map = (params, tx.init(params))
    via_pmap = (params, tx.init(params))
    for g in per_device:
        expected = single(*expected, g)
        via_shard_map = sharded(*via_shard_map, g)
        out = pmapped(*via_pmap, g)
        via_pmap = jax.tree.map(lambda x: x[0], out)
    chex.assert_trees_all_close(via_shard_map, expected, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(via_pmap, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["lars"])
def test_converges_on_quadratic_and_rosenbrock(name):
    on_rosenbrock, on_quadratic = CONVERGENCE[name]
    theta = minimise(on_rosenbrock, rosenbrock, jnp.array([-1.2, 1.0]), 20000)
    np.testing.assert_allclose(theta, [1.0, 1.0], atol=1e-3)
    theta = minimise(on_quadratic, quadratic, jnp.full(5, 0.1), 2000)
    np.testing.assert_allclose(theta, QUADRATIC_MINIMUM, atol=1e-3)


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
