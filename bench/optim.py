"""Step time of each hand-written optimizer against its Optax twin on a ResNet-50-sized pytree.

    python -m bench.optim [--rounds 25] [--steps 1]

The pytree has ResNet-50's 161 parameter tensors and shapes (25,557,032 float32 numbers; built
directly, no model). A step is `update` + `apply_updates`, jitted with the parameters and optimizer
state donated. The two twins of a pair are timed in alternating rounds of `--steps` steps, so
drift in the machine's speed hits both, and each figure is the median over rounds. On the CPU the
clock is the process's CPU time (`time.process_time`, all threads): other programs sharing the
cores stretch wall-clock time by a factor of two or more but leave it nearly unchanged. On an
accelerator the clock is wall time. Prints one line per pair and the ratio hand-written / Optax
(goal ≤ 1.05).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from visionax import optim
from visionax.losses.penalties import decay_mask

LR = 0.1


def resnet50_shapes() -> dict:
    """ResNet-50's parameters (convolutions without bias, BatchNorm scale/bias, the 1000-way head)."""
    shapes = {"stem": {"conv": {"kernel": (7, 7, 3, 64)}, "bn": {"scale": (64,), "bias": (64,)}}}
    channels = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512))):
        for block in range(blocks):
            out = 4 * width
            layer = {}
            for index, (k, cin, cout) in enumerate(
                ((1, channels, width), (3, width, width), (1, width, out))
            ):
                layer[f"conv{index}"] = {"kernel": (k, k, cin, cout)}
                layer[f"bn{index}"] = {"scale": (cout,), "bias": (cout,)}
            if block == 0:
                layer["proj_conv"] = {"kernel": (1, 1, channels, out)}
                layer["proj_bn"] = {"scale": (out,), "bias": (out,)}
            shapes[f"stage{stage}_block{block}"] = layer
            channels = out
    shapes["head"] = {"kernel": (2048, 1000), "bias": (1000,)}
    return shapes


def random_tree(shapes: dict, key: jax.Array, scale: float) -> dict:
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(
        treedef, [scale * jax.random.normal(k, shape, jnp.float32) for k, shape in zip(keys, leaves)]
    )


def optimizer_step(tx: optax.GradientTransformation):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def averaging_step(update):
    def step(params, state, grads):
        del grads
        return params, update(params, state)

    return step


def pairs():
    """name -> ((hand-written step, init), (Optax step, init))."""
    mask = decay_mask
    transforms = {
        "sgd": (optim.sgd(LR), optax.sgd(LR)),
        "momentum": (optim.momentum(LR, beta=0.9), optax.sgd(LR, momentum=0.9)),
        "nesterov": (optim.nesterov(LR, beta=0.9), optax.sgd(LR, momentum=0.9, nesterov=True)),
        "adagrad": (
            optim.adagrad(LR, eps=1e-7),
            optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-7),
        ),
        "rmsprop": (
            optim.rmsprop(LR, decay=0.9, eps=1e-8),
            optax.rmsprop(LR, decay=0.9, eps=1e-8, eps_in_sqrt=False),
        ),
        "adam": (optim.adam(LR), optax.adam(LR)),
        "lars": (
            optim.lars(LR, momentum=0.9, weight_decay=1e-6, trust_coefficient=0.001),
            optax.lars(
                LR, weight_decay=1e-6, weight_decay_mask=mask, trust_coefficient=0.001,
                trust_ratio_mask=mask, momentum=0.9,
            ),
        ),
        "adam+warmup_cosine": (
            optim.adam(optax.warmup_cosine_decay_schedule(0.0, LR, 100, 10_000)),
            optax.adam(optax.warmup_cosine_decay_schedule(0.0, LR, 100, 10_000)),
        ),
    }
    table = {
        name: ((optimizer_step(ours), ours.init), (optimizer_step(twin), twin.init))
        for name, (ours, twin) in transforms.items()
    }
    polyak = optim.polyak_average(0.999)
    ema = optax.ema(0.999, debias=True)  # fed the parameters as its updates: the same average

    def ema_init(params):
        return ema.init(params), jax.tree.map(jnp.zeros_like, params)

    def ema_update(params, state):
        average, ema_state = ema.update(params, state[0])
        return ema_state, average

    table["polyak_average"] = (
        (averaging_step(polyak.update), polyak.init),
        (averaging_step(ema_update), ema_init),
    )
    classic = optim.polyak_average(0.999, debias=False)
    table["polyak (debias=False)"] = (
        (averaging_step(classic.update), classic.init),
        (
            averaging_step(
                lambda params, average: optax.incremental_update(params, average, step_size=0.001)
            ),
            lambda params: jax.tree.map(jnp.array, params),
        ),
    )
    return table


def time_pair(ours, twin, params, grads, rounds: int, steps: int, clock) -> tuple[float, float]:
    """Median seconds per step of each twin by `clock`; the rounds alternate between twins."""
    runs = []
    for step, init in (ours, twin):
        compiled = jax.jit(step, donate_argnums=(0, 1))
        carry = (jax.tree.map(jnp.copy, params), init(params))
        for _ in range(2):  # compile and warm up
            carry = compiled(*carry, grads)
        jax.block_until_ready(carry)
        runs.append([compiled, carry, []])
    for _ in range(rounds):
        for run in runs:
            compiled, carry, times = run
            start = clock()
            for _ in range(steps):
                carry = compiled(*carry, grads)
            jax.block_until_ready(carry)
            times.append((clock() - start) / steps)
            run[1] = carry
    return tuple(statistics.median(run[2]) for run in runs)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="alternating rounds per pair")
    parser.add_argument("--steps", type=int, default=1, help="steps per round")
    args = parser.parse_args(argv)

    shapes = resnet50_shapes()
    params = random_tree(shapes, jax.random.key(0), 0.05)
    grads = random_tree(shapes, jax.random.key(1), 0.01)
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    on_cpu = jax.default_backend() == "cpu"
    clock, clock_name = (time.process_time, "CPU") if on_cpu else (time.perf_counter, "wall")
    print(
        f"ResNet-50-sized pytree: {len(jax.tree.leaves(params))} tensors, {count:,} float32 "
        f"parameters; device {jax.devices()[0].device_kind} x{jax.device_count()}; "
        f"{args.rounds} rounds x {args.steps} steps; median {clock_name} time per step"
    )
    print(f"{'optimizer':<22} {'visionax ms':>12} {'optax ms':>10} {'ratio':>7}")
    ratios = []
    for name, (ours, twin) in pairs().items():
        ours_s, twin_s = time_pair(
            ours, twin, params, grads, args.rounds, args.steps, clock
        )
        ratios.append(ours_s / twin_s)
        print(f"{name:<22} {1e3 * ours_s:>12.2f} {1e3 * twin_s:>10.2f} {ours_s / twin_s:>7.3f}")
    print(f"{'worst ratio':<22} {'':>12} {'':>10} {max(ratios):>7.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()
