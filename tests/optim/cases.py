"""What the optimizer tests share: the problem, the float64 NumPy reference of every rule, the
tolerance check, and the table of cases (ours, the Optax twin, the reference's options).

Every transform runs 250 jitted steps on a pytree of mixed shapes (a scalar leaf included) with
random gradients. The parameters after every step must agree to max|actual − expected| ≤
tol · max(1, max|expected|) per leaf (a relative tolerance on the leaf's scale, which random-walk
parameters make grow to ~10), with tol:

- against the Optax twin computing the same rule: float32 1e-5, float64 1e-13;
- against the NumPy float64 reference: float32 1e-5, float64 1e-12.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from visionax import optim, schedules
from visionax.losses.penalties import decay_mask

STEPS = 250
LR = 0.05
TOLERANCES = {
    "optax": {np.float32: 1e-5, np.float64: 1e-13},
    "numpy": {np.float32: 1e-5, np.float64: 1e-12},
}
SHAPES = {
    "conv": {"kernel": (3, 3, 2, 4), "bias": (4,)},
    "bn": {"scale": (4,), "bias": (4,)},
    "dense": {"kernel": (6, 3)},
    "temperature": (),
}


def make_problem(dtype, seed=0):
    """Parameters and `STEPS` gradients per leaf (float64 NumPy), plus the same cast to `dtype`."""
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree.flatten(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
    params = [rng.normal(size=shape) for shape in leaves]
    grads = [rng.normal(size=(STEPS,) + shape) * rng.uniform(0.1, 2.0) for shape in leaves]
    params64 = jax.tree.unflatten(treedef, params)
    grads64 = jax.tree.unflatten(treedef, grads)
    cast = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, dtype), tree)
    return params64, grads64, cast(params64), cast(grads64)


def optax_schedule():
    """An Optax schedule: 20 warmup steps, then a cosine decay."""
    return optax.warmup_cosine_decay_schedule(0.0, LR, 20, STEPS, end_value=0.1 * LR)


def schedule_for(dtype):
    """Optax's schedule in float32; in float64 the same shape from `visionax.schedules`, because
    Optax's schedules compute in float32 from an int32 count even under x64 (and jit may round
    that float32 value differently from an eager call)."""
    if dtype == np.float32:
        return optax_schedule()
    return schedules.warmup(schedules.cosine(LR, STEPS - 20), 20)


def learning_rates(schedule):
    if schedule is None:
        return np.full(STEPS, LR)
    # The values the optimizers see: the schedule of an int32 count (float32 for Optax's schedules
    # even under x64).
    return np.array([float(schedule(jnp.int32(t))) for t in range(STEPS)], np.float64)


def run(tx, params, grads):
    """The parameters after each of the steps (leading axis), jitted as one scan."""

    @jax.jit
    def trajectory(params, grads):
        def step(carry, g):
            params, state = carry
            updates, state = tx.update(g, state, params)
            params = optax.apply_updates(params, updates)
            return (params, state), params

        _, params_seq = jax.lax.scan(step, (params, tx.init(params)), grads)
        return params_seq

    return trajectory(params, grads)


# ------------------------------------------------------------------------------------------------
# float64 NumPy references: one loop per rule, written from the lecture's formulas.


def reference(name, params, grads, lrs, **options):
    leaves, treedef = jax.tree.flatten(params)
    grad_leaves = jax.tree.leaves(grads)
    mask = options.pop("mask", [True] * len(leaves))
    out = []
    for index, (theta, g_seq) in enumerate(zip(leaves, grad_leaves)):
        theta = np.array(theta, np.float64)
        v = np.zeros_like(theta)
        s = np.zeros_like(theta)
        r = np.zeros_like(theta)
        seq = []
        for t in range(STEPS):
            g, eps = np.asarray(g_seq[t], np.float64), lrs[t]
            if name == "sgd":
                theta = theta - eps * g
            elif name == "momentum":
                v = options.get("beta", 0.9) * v - eps * g
                theta = theta + v
            elif name == "nesterov":
                beta = options.get("beta", 0.9)
                v_new = beta * v - eps * g
                theta = theta + v_new + beta * (v_new - v)
                v = v_new
            elif name == "adagrad":
                r = r + g * g
                theta = theta - eps * g / (np.sqrt(r) + options.get("eps", 1e-7))
            elif name == "rmsprop":
                rho = options.get("decay", 0.9)
                r = rho * r + (1 - rho) * g * g
                theta = theta - eps * g / (np.sqrt(r) + options.get("eps", 1e-8))
            elif name == "adam":
                b1, b2 = options.get("b1", 0.9), options.get("b2", 0.999)
                s = b1 * s + (1 - b1) * g
                r = b2 * r + (1 - b2) * g * g
                s_hat, r_hat = s / (1 - b1 ** (t + 1)), r / (1 - b2 ** (t + 1))
                theta = theta - eps * s_hat / (np.sqrt(r_hat) + options.get("eps", 1e-8))
            elif name == "lars":
                d = g
                if mask[index]:
                    d = g + options["weight_decay"] * theta
                    w_norm, d_norm = np.linalg.norm(theta), np.linalg.norm(d)
                    ratio = options["trust_coefficient"] * w_norm / d_norm
                    d = d * (ratio if w_norm > 0 and d_norm > 0 else 1.0)
                v = options.get("momentum", 0.9) * v - eps * d
                theta = theta + v
            seq.append(theta)
        out.append(np.stack(seq))
    return jax.tree.unflatten(treedef, out)


def assert_close(actual, expected, tol):
    """max|actual − expected| ≤ tol · max(1, max|expected|), leaf by leaf."""
    chex.assert_trees_all_equal_shapes(actual, expected)
    for path, a, e in zip(
        jax.tree_util.tree_flatten_with_path(actual)[0],
        jax.tree.leaves(actual),
        jax.tree.leaves(expected),
    ):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        scale = max(1.0, float(np.max(np.abs(e))))
        error = float(np.max(np.abs(a - e)))
        assert error <= tol * scale, (
            f"{jax.tree_util.keystr(path[0])}: max error {error:.3g} > {tol:g} x scale {scale:.3g}"
        )


LARS_OPTIONS = dict(momentum=0.9, weight_decay=1e-2, trust_coefficient=0.001)

# name -> (ours(lr), its Optax twin(lr) or None, NumPy reference options)
CASES = {
    "sgd": (optim.sgd, optax.sgd, {}),
    "momentum": (
        lambda lr: optim.momentum(lr, beta=0.9),
        lambda lr: optax.sgd(lr, momentum=0.9),
        {"beta": 0.9},
    ),
    "nesterov": (
        lambda lr: optim.nesterov(lr, beta=0.8),
        lambda lr: optax.sgd(lr, momentum=0.8, nesterov=True),
        {"beta": 0.8},
    ),
    # optax.adagrad puts eps inside the root and starts the sum at 0.1: its twin has both at 0.
    "adagrad": (
        lambda lr: optim.adagrad(lr, eps=1e-7),
        None,
        {"eps": 1e-7},
    ),
    "adagrad_eps0": (
        lambda lr: optim.adagrad(lr, eps=0.0),
        lambda lr: optax.adagrad(lr, initial_accumulator_value=0.0, eps=0.0),
        {"eps": 0.0},
    ),
    "rmsprop": (
        lambda lr: optim.rmsprop(lr, decay=0.95, eps=1e-8),
        lambda lr: optax.rmsprop(lr, decay=0.95, eps=1e-8, eps_in_sqrt=False),
        {"decay": 0.95, "eps": 1e-8},
    ),
    "adam": (
        lambda lr: optim.adam(lr, b1=0.9, b2=0.99, eps=1e-8),
        lambda lr: optax.adam(lr, b1=0.9, b2=0.99, eps=1e-8),
        {"b1": 0.9, "b2": 0.99, "eps": 1e-8},
    ),
    "lars": (
        lambda lr: optim.lars(lr, **LARS_OPTIONS),
        lambda lr: optax.lars(
            lr,
            weight_decay=LARS_OPTIONS["weight_decay"],
            weight_decay_mask=decay_mask,
            trust_coefficient=LARS_OPTIONS["trust_coefficient"],
            trust_ratio_mask=decay_mask,
            momentum=LARS_OPTIONS["momentum"],
        ),
        LARS_OPTIONS,
    ),
    "lars_unmasked": (
        lambda lr: optim.lars(lr, **LARS_OPTIONS, mask=None),
        lambda lr: optax.lars(
            lr,
            weight_decay=LARS_OPTIONS["weight_decay"],
            trust_coefficient=LARS_OPTIONS["trust_coefficient"],
            momentum=LARS_OPTIONS["momentum"],
        ),
        LARS_OPTIONS,
    ),
}

# Under a schedule Optax's momentum and Nesterov multiply the whole velocity by the current ε_t,
# ours put each ε_k into the velocity with its gradient: only the NumPy reference applies.
OPTAX_DIFFERS_UNDER_SCHEDULE = {"momentum", "nesterov"}


def reference_options(name, params):
    options = dict(CASES[name][2])
    if name == "lars":
        options["mask"] = jax.tree.leaves(decay_mask(params))
    return "lars" if name.startswith("lars") else name.removesuffix("_eps0"), options


ALL = {name: ours for name, (ours, _, _) in CASES.items()}


def _per_device_step(tx, axis_name):
    def step(params, state, g):
        g = jax.lax.pmean(jax.tree.map(lambda x: x[0] if x.ndim else x, g), axis_name)
        updates, state = tx.update(g, state, params)
        return optax.apply_updates(params, updates), state

    return step



A = np.diag([1.0, 2.0, 4.0, 7.0, 10.0])
B = np.arange(1.0, 6.0)
QUADRATIC_MINIMUM = np.linalg.solve(A, B)


def quadratic(theta):
    return 0.5 * theta @ jnp.asarray(A) @ theta - jnp.asarray(B) @ theta


def rosenbrock(theta):
    x, y = theta[0], theta[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def cosine(lr, steps):
    return optax.cosine_decay_schedule(lr, steps)


# name -> (Rosenbrock optimizer over 20000 steps, quadratic optimizer over 2000 steps)
CONVERGENCE = {
    "sgd": (optim.sgd(1.5e-3), optim.sgd(0.1)),
    "momentum": (optim.momentum(1e-3), optim.momentum(0.02)),
    "nesterov": (optim.nesterov(1e-3), optim.nesterov(0.02)),
    "adagrad": (optim.adagrad(0.5), optim.adagrad(1.0)),
    "rmsprop": (optim.rmsprop(cosine(1e-2, 20000)), optim.rmsprop(cosine(0.1, 2000))),
    "adam": (optim.adam(cosine(2e-2, 20000)), optim.adam(cosine(0.1, 2000))),
    # The trust ratio normalises the step to ε·η·‖θ‖, so LARS needs a decaying ε to settle.
    "lars": (
        optim.lars(cosine(50.0, 20000), weight_decay=0.0, mask=None),
        optim.lars(cosine(100.0, 2000), weight_decay=0.0, mask=None),
    ),
}


def minimise(tx, loss, theta, steps):
    @jax.jit
    def go(theta):
        def step(carry, _):
            theta, state = carry
            updates, state = tx.update(jax.grad(loss)(theta), state, theta)
            return (optax.apply_updates(theta, updates), state), None

        (theta, _), _ = jax.lax.scan(step, (theta, tx.init(theta)), None, length=steps)
        return theta

    return np.asarray(go(theta))


# ------------------------------------------------------------------------------------------------
# The checks every optimizer's tests run (tests/optim/test_first_order.py, test_lars.py).


def check_against_optax_and_numpy(name, scheduled, dtype):
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


def check_no_recompilation(name):
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


def check_shard_map_and_pmap_match_jit(name):
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


def check_convergence(name):
    on_rosenbrock, on_quadratic = CONVERGENCE[name]
    theta = minimise(on_rosenbrock, rosenbrock, jnp.array([-1.2, 1.0]), 20000)
    np.testing.assert_allclose(theta, [1.0, 1.0], atol=1e-3)
    theta = minimise(on_quadratic, quadratic, jnp.full(5, 0.1), 2000)
    np.testing.assert_allclose(theta, QUADRATIC_MINIMUM, atol=1e-3)
