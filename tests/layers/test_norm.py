"""Hand-written normalisation layers against flax.linen, in training and evaluation, on 1 and 8 devices."""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec as P

from visionax import gradcheck
from visionax.layers import norm

TOL = dict(rtol=1e-5, atol=1e-5)

# (input shape, our layer, the flax layer, how the flax layer sees the input)
IDENTITY = lambda x: x  # noqa: E731
CASES = {
    "BL-layer": ((16, 12), norm.LayerNorm(), fnn.LayerNorm(), IDENTITY),
    "BL-instance": ((16, 12), norm.InstanceNorm(feature_axes=()), fnn.InstanceNorm(feature_axes=()), IDENTITY),
    "BL-group": ((16, 12), norm.GroupNorm(num_groups=4), fnn.GroupNorm(num_groups=4), IDENTITY),
    "BCL-layer": ((8, 6, 10), norm.LayerNorm(reduction_axes=(1, 2), feature_axes=1),
                  fnn.LayerNorm(reduction_axes=(1, 2), feature_axes=1), IDENTITY),
    "BCL-instance": ((8, 6, 10), norm.InstanceNorm(feature_axes=1), fnn.InstanceNorm(feature_axes=1), IDENTITY),
    "BCL-group": ((8, 6, 10), norm.GroupNorm(num_groups=3, feature_axis=1), fnn.GroupNorm(num_groups=3),
                  lambda x: jnp.moveaxis(x, 1, -1)),
    "BHWC-layer": ((4, 5, 5, 8), norm.LayerNorm(reduction_axes=(1, 2, 3)), fnn.LayerNorm(reduction_axes=(1, 2, 3)), IDENTITY),
    "BHWC-instance": ((4, 5, 5, 8), norm.InstanceNorm(), fnn.InstanceNorm(), IDENTITY),
    "BHWC-group": ((4, 5, 5, 8), norm.GroupNorm(num_groups=4), fnn.GroupNorm(num_groups=4), IDENTITY),
    "BHWC-group-size": ((4, 5, 5, 8), norm.GroupNorm(num_groups=None, group_size=2),
                        fnn.GroupNorm(num_groups=None, group_size=2), IDENTITY),
}
BATCH_NORM_CASES = {"BL": ((16, 12), -1), "BCL": ((8, 6, 10), 1), "BHWC": ((4, 5, 5, 8), -1)}


def _inputs(shape, seed=0):
    return 2.0 * jax.random.normal(jax.random.key(seed), shape) + 0.5


def _perturb(variables, seed=1):
    """Scale and bias away from 1 and 0 (and running stats away from 0 and 1) so a mix-up would show."""
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(treedef, [leaf + 0.3 * jnp.abs(jax.random.normal(k, leaf.shape)) for leaf, k in zip(leaves, keys)])


def _flax_output(ref, variables, x, view):
    y = ref.apply(variables, view(x))
    return jnp.moveaxis(y, -1, 1) if view is not IDENTITY else y


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_flax(case):
    shape, ours, ref, view = CASES[case]
    x = _inputs(shape)
    variables = _perturb(ours.init(jax.random.key(0), x))
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, ref.init(jax.random.key(0), view(x)))
    np.testing.assert_allclose(ours.apply(variables, x), _flax_output(ref, variables, x, view), **TOL)

    weights = jax.random.normal(jax.random.key(2), shape)
    grads = jax.jit(jax.grad(lambda v, x: jnp.sum(ours.apply(v, x) * weights), argnums=(0, 1)))(variables, x)
    ref_grads = jax.jit(jax.grad(lambda v, x: jnp.sum(_flax_output(ref, v, x, view) * weights), argnums=(0, 1)))(variables, x)
    # Gradients agree to float32 rounding (flax's one-pass E[x²] − E[x]² costs a few ulps more);
    # their exactness is checked in float64 by test_gradients_by_finite_differences.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), grads, ref_grads)


@pytest.mark.parametrize("case", sorted(BATCH_NORM_CASES))
def test_batch_norm_matches_flax_in_training_and_evaluation(case):
    shape, axis = BATCH_NORM_CASES[case]
    ours, ref = norm.BatchNorm(axis=axis, momentum=0.9), fnn.BatchNorm(axis=axis, momentum=0.9)
    variables = _perturb(ours.init(jax.random.key(0), _inputs(shape), use_running_average=False))
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
        jnp.shape, ref.init(jax.random.key(0), _inputs(shape), use_running_average=False))
    ours_vars, ref_vars = variables, variables
    for step in range(3):  # training: batch statistics, running averages updated
        x = _inputs(shape, seed=10 + step) * (step + 1)
        y, ours_update = ours.apply(ours_vars, x, use_running_average=False, mutable=["batch_stats"])
        y_ref, ref_update = ref.apply(ref_vars, x, use_running_average=False, mutable=["batch_stats"])
        np.testing.assert_allclose(y, y_ref, **TOL)
        ours_vars = {**ours_vars, **ours_update}
        ref_vars = {**ref_vars, **ref_update}
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), ours_vars["batch_stats"], ref_vars["batch_stats"])
    # The running mean is the exponential average of the batch means.
    reduce = tuple(i for i in range(len(shape)) if i != axis % len(shape))
    expected_mean = np.asarray(variables["batch_stats"]["mean"], np.float64)
    for step in range(3):
        x = np.asarray(_inputs(shape, seed=10 + step) * (step + 1), np.float64)
        expected_mean = 0.9 * expected_mean + 0.1 * x.mean(axis=reduce)
    np.testing.assert_allclose(ours_vars["batch_stats"]["mean"], expected_mean, **TOL)

    x = _inputs(shape, seed=99)  # evaluation: running averages
    y_eval = ours.apply(ours_vars, x, use_running_average=True)
    np.testing.assert_allclose(y_eval, ref.apply(ref_vars, x, use_running_average=True), **TOL)
    mean = np.asarray(ours_vars["batch_stats"]["mean"]).reshape([-1 if i == axis % len(shape) else 1 for i in range(len(shape))])
    var = np.asarray(ours_vars["batch_stats"]["var"]).reshape(mean.shape)
    scale = np.asarray(ours_vars["params"]["scale"]).reshape(mean.shape)
    bias = np.asarray(ours_vars["params"]["bias"]).reshape(mean.shape)
    np.testing.assert_allclose(y_eval, (np.asarray(x) - mean) / np.sqrt(var + 1e-5) * scale + bias, **TOL)


@pytest.mark.parametrize("case", sorted(BATCH_NORM_CASES))
def test_split_batch_norm_normalises_each_slice_like_flax_on_that_slice(case):
    """num_splits = G: every slice of batch/G examples equals flax's BatchNorm on that slice alone,
    and the running averages move toward the mean of the G slices' statistics."""
    shape, axis = BATCH_NORM_CASES[case]
    splits = 4  # every case's batch is a multiple of 4
    ours = norm.BatchNorm(axis=axis, momentum=0.9, num_splits=splits)
    ref = fnn.BatchNorm(axis=axis, momentum=0.9)
    x = _inputs(shape) * jnp.arange(1, shape[0] + 1).reshape((-1,) + (1,) * (len(shape) - 1))
    variables = _perturb(ours.init(jax.random.key(0), x, use_running_average=False))
    y, updates = ours.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    slice_outputs, slice_stats = [], []
    for part in jnp.split(x, splits):
        y_part, update = ref.apply(variables, part, use_running_average=False, mutable=["batch_stats"])
        slice_outputs.append(y_part)
        slice_stats.append(update["batch_stats"])
    np.testing.assert_allclose(y, jnp.concatenate(slice_outputs), **TOL)
    expected_stats = jax.tree.map(lambda *leaves: np.mean(leaves, axis=0), *slice_stats)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), updates["batch_stats"], expected_stats)
    # One slice is plain BatchNorm of the whole batch; evaluation ignores num_splits.
    whole, _ = ref.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    assert not np.allclose(y, whole, atol=1e-3)
    np.testing.assert_allclose(ours.apply(variables, x, use_running_average=True),
                               ref.apply(variables, x, use_running_average=True), **TOL)


def test_split_batch_norm_errors_and_output_dtype():
    x = _inputs((6, 4))
    layer = norm.BatchNorm(num_splits=4, use_running_average=False)
    variables = layer.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="batch 6 is not divisible by num_splits=4"):
        layer.apply(variables, x, mutable=["batch_stats"])
    with pytest.raises(ValueError, match="axis_name"):
        norm.BatchNorm(num_splits=2, axis_name="data", use_running_average=False).apply(
            variables, x, mutable=["batch_stats"])
    y, _ = norm.BatchNorm(num_splits=2, use_running_average=False, dtype=jnp.bfloat16).apply(
        variables, x.astype(jnp.bfloat16), mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16


def test_synchronised_batch_norm_on_8_devices_equals_unsharded():
    devices = jax.devices()
    assert len(devices) == 8, "tests/conftest.py sets 8 fake CPU devices"
    mesh = Mesh(np.array(devices), ("data",))
    x = _inputs((32, 4, 4, 6), seed=5)
    single = norm.BatchNorm(momentum=0.8)
    synced = norm.BatchNorm(momentum=0.8, axis_name="data")
    variables = _perturb(single.init(jax.random.key(0), x, use_running_average=False))

    def per_device(v, x_local):
        y, update = synced.apply(v, x_local, use_running_average=False, mutable=["batch_stats"])
        return y, update["batch_stats"]

    sharded = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")), out_specs=(P("data"), P())))
    y, stats = sharded(variables, x)
    y_ref, update = single.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    np.testing.assert_allclose(y, y_ref, **TOL)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), stats, update["batch_stats"])
    # Without synchronisation each device normalises by its own 4 examples: different numbers.
    local = jax.jit(jax.shard_map(lambda v, x: single.apply(v, x, use_running_average=False, mutable=["batch_stats"])[0],
                                  mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")))(variables, x)
    assert float(jnp.max(jnp.abs(local - y_ref))) > 1e-2
    # And flax's synchronised BatchNorm agrees.
    flax_synced = fnn.BatchNorm(momentum=0.8, axis_name="data")
    y_flax = jax.jit(jax.shard_map(
        lambda v, x: flax_synced.apply(v, x, use_running_average=False, mutable=["batch_stats"])[0],
        mesh=mesh, in_specs=(P(), P("data")), out_specs=P("data")))(variables, x)
    np.testing.assert_allclose(y, y_flax, **TOL)


def test_batch_norm_variance_is_clipped_at_zero():
    """E[x²] − E[x]² of a constant feature near 1000 rounds to about ±1 in float32 (E[x²] ≈ 1e6 keeps 7
    digits); σ² is clipped at 0, so the output stays finite (no √ of a negative number) and the
    running variance ≥ 0."""
    x = (1000.0 + 0.37 * jnp.arange(16.0)) * jnp.ones((64, 1))
    layer = norm.BatchNorm(momentum=0.0, use_running_average=False)
    y, updates = layer.apply(layer.init(jax.random.key(0), x), x, mutable=["batch_stats"])
    var = np.asarray(updates["batch_stats"]["var"])  # momentum 0: this batch's σ²
    assert np.all(np.isfinite(y)) and np.all(var >= 0) and np.any(var == 0)
    assert np.max(var) < 2.0  # the rounding error of E[x²] − E[x]² at |μ| = 1000, σ = 0


def test_batch_norm_statistics_are_float32_for_bfloat16_inputs():
    x = (_inputs((32, 6)) * 3 + 2).astype(jnp.bfloat16)
    layer = norm.BatchNorm(momentum=0.0, use_running_average=False, dtype=jnp.bfloat16)
    variables = layer.init(jax.random.key(0), x)
    y, updates = layer.apply(variables, x, mutable=["batch_stats"])
    exact = np.asarray(x, np.float64)
    # momentum 0: the running averages are this batch's statistics, computed from the bf16 values in float32.
    np.testing.assert_allclose(updates["batch_stats"]["mean"], exact.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["var"], exact.var(axis=0), rtol=1e-4)
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y, np.float64), (exact - exact.mean(0)) / np.sqrt(exact.var(0) + 1e-5),
                               rtol=2**-7, atol=2**-7)


GRAD_CASES = {
    "batch-BL": (norm.BatchNorm(use_running_average=False), (6, 3)),
    "batch-BCL": (norm.BatchNorm(use_running_average=False, axis=1), (3, 2, 4)),
    "layer-BL": (norm.LayerNorm(), (3, 5)),
    "instance-BHWC": (norm.InstanceNorm(), (2, 3, 2, 2)),
    "group-BHWC": (norm.GroupNorm(num_groups=2), (2, 2, 2, 4)),
    "group-BCL": (norm.GroupNorm(num_groups=2, feature_axis=1), (2, 4, 3)),
}


@pytest.mark.parametrize("case", sorted(GRAD_CASES))
def test_gradients_by_finite_differences(case):
    layer, shape = GRAD_CASES[case]
    x = np.asarray(_inputs(shape), np.float64)
    variables = layer.init(jax.random.key(0), x)
    params = jax.tree.map(lambda a: np.asarray(a, np.float64), _perturb(variables["params"]))
    others = {k: v for k, v in variables.items() if k != "params"}
    weights = np.asarray(jax.random.normal(jax.random.key(3), shape), np.float64)

    def f(p):
        out = layer.apply({"params": p["params"], **others}, p["x"], mutable=["batch_stats"])[0] if others else \
            layer.apply({"params": p["params"]}, p["x"])
        return jnp.sum(jnp.sin(out) * weights)

    gradcheck.assert_grad_close(f, {"params": params, "x": x})


def test_bad_group_counts():
    x = jnp.ones((2, 6))
    with pytest.raises(ValueError, match="groups"):
        norm.GroupNorm(num_groups=4).init(jax.random.key(0), x)
    with pytest.raises(ValueError, match="exactly one"):
        norm.GroupNorm(num_groups=2, group_size=3).init(jax.random.key(0), x)
