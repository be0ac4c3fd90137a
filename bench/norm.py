"""Training step of a ResNet with the hand-written BatchNorm against the same step with flax's.

    python -m bench.norm [--rounds 12] [--batch 128] [--width 16] [--conv-impl auto]

The model is ResNet-18 with the CIFAR stem (`get_model("resnet18", cifar_stem=True, width=16,
num_classes=10)`) on 32×32 images. A step is `jax.value_and_grad` of the mean softmax
cross-entropy through `model.apply(..., train=True, mutable=["batch_stats"])`: the forward and
backward pass and the batch-statistics update. The two contestants differ only in the BatchNorm
layer behind `visionax.models.common.norm_def`: "visionax" is the zoo as it is
(`visionax.layers.norm.BatchNorm`); "flax" swaps in `flax.linen.BatchNorm` with the same options
(the layer the zoo used before the hand-written one), while the step is traced and compiled.

Both steps are compiled ahead of time (the bench says whether the two optimised programs are the
same, metadata aside), run once, and checked to give the same loss, gradients and statistics. Then
`--rounds` rounds time each contestant once, alternating which goes first; each timed step follows
one untimed step of the same program (see bench/train_step.py). The machine is shared, so both
clocks are reported: wall time and the process's CPU time (all threads; other programs sharing the
cores stretch the first but barely the second). Prints best and median of each and the ratio
visionax / flax (below 1: the hand-written layer is faster).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import statistics
import time
from unittest import mock

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from visionax.models import common, get_model


def flax_norm_def(train, dtype, axis_name=None, splits=1):
    """`norm_def` as it was with flax's layer: `nn.BatchNorm`, momentum 0.9, epsilon 1e-5."""
    assert splits == 1, "flax's BatchNorm has no split statistics"
    return functools.partial(nn.BatchNorm, use_running_average=not train, momentum=common.BN_MOMENTUM,
                             epsilon=common.BN_EPSILON, dtype=dtype, param_dtype=jnp.float32,
                             axis_name=axis_name)


def with_norm(which: str):
    """A context in which the zoo's ResNet builds its BatchNorm layers with `which`'s layer."""
    if which == "visionax":
        return contextlib.nullcontext()
    return mock.patch("visionax.models.resnet.norm_def", flax_norm_def)


def compiled_step(which: str, model, variables, images, labels):
    def step(params, batch_stats, images, labels):
        def loss_fn(params):
            logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                          train=True, mutable=["batch_stats"])
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return loss, grads, new_stats

    args = (variables["params"], variables["batch_stats"], images, labels)
    with with_norm(which):
        t = time.perf_counter()
        compiled = jax.jit(step).lower(*args).compile()
    print(f"  compiled {which}: {time.perf_counter() - t:.1f} s", flush=True)
    return (lambda: compiled(*args)), program_text(compiled)


def program_text(compiled) -> str:
    """The optimised HLO program without its metadata (source lines, op names, the stack-frame tables)."""
    text = re.sub(r", metadata=\{[^}]*\}", "", compiled.as_text())
    tables = ("HloModule", "FileNames", "FunctionNames", "FileLocations", "StackFrames")
    return "\n".join(line for line in text.splitlines()
                     if not line.startswith(tables) and not re.match(r"\d+ ", line))


def check_same(outputs: dict) -> None:
    """The two steps compute the same loss and statistics (to float32 rounding) and close gradients.

    Gradients are compared loosely: through 18 BatchNorm layers float32 rounding moves some of the
    deepest ones by a few percent (each of the two is as far from the float64 step as from the other)."""
    (name_a, (loss_a, grads_a, stats_a)), (name_b, (loss_b, grads_b, stats_b)) = outputs.items()

    def worst(a, b):
        return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-12))
                   for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))

    differences = {"loss": worst(loss_a, loss_b), "statistics": worst(stats_a, stats_b),
                   "gradients": worst(grads_a, grads_b)}
    print(f"  loss {name_a} {float(loss_a):.6f}, {name_b} {float(loss_b):.6f}; largest difference "
          "relative to the largest entry of its array: "
          + ", ".join(f"{key} {value:.1e}" for key, value in differences.items()))
    assert differences["loss"] < 1e-5 and differences["statistics"] < 1e-4, "the layers disagree"
    assert differences["gradients"] < 0.1, "the layers' gradients disagree"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--conv-impl", default="auto")
    args = parser.parse_args(argv)

    model = get_model("resnet18", num_classes=10, cifar_stem=True, width=args.width,
                      conv_impl=args.conv_impl)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, args.batch), jnp.int32)
    variables = model.init(jax.random.key(0), images[:1])
    print(f"ResNet-18 (CIFAR stem, width {args.width}), batch {args.batch}, 32×32, conv_impl="
          f"{args.conv_impl!r}, {jax.devices()[0].platform}; value_and_grad + batch-stat update")
    built = {which: compiled_step(which, model, variables, images, labels) for which in ("flax", "visionax")}
    contestants = {which: run for which, (run, _) in built.items()}
    same_program = built["flax"][1] == built["visionax"][1]
    print(f"  the two compiled programs are {'identical' if same_program else 'different'} "
          "(HLO text without metadata)")
    check_same({which: jax.block_until_ready(run()) for which, run in contestants.items()})

    wall = {which: [] for which in contestants}
    cpu = {which: [] for which in contestants}
    order = list(contestants)
    for round_ in range(args.rounds):
        for which in order if round_ % 2 == 0 else order[::-1]:
            run = contestants[which]
            jax.block_until_ready(run())  # untimed: the timed step follows a step of its own
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(run())
            wall[which].append(time.perf_counter() - t)
            cpu[which].append(time.process_time() - c)

    print(f"  {args.rounds} rounds, one timed step per contestant per round (ms)")
    print(f"  {'BatchNorm':10s} {'wall best':>10s} {'wall median':>12s} {'CPU best':>10s} "
          f"{'CPU median':>11s}")
    for which in contestants:
        print(f"  {which:10s} {1e3 * min(wall[which]):10.1f} {1e3 * statistics.median(wall[which]):12.1f} "
              f"{1e3 * min(cpu[which]):10.1f} {1e3 * statistics.median(cpu[which]):11.1f}")
    ratio = lambda times, f: f(times["visionax"]) / f(times["flax"])  # noqa: E731
    print(f"  ratio visionax / flax: wall best {ratio(wall, min):.3f}, wall median "
          f"{ratio(wall, statistics.median):.3f}, CPU best {ratio(cpu, min):.3f}, CPU median "
          f"{ratio(cpu, statistics.median):.3f}")


if __name__ == "__main__":
    main()
