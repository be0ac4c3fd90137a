"""XLA CPU compile time under other compiler flags, the run time it costs, and whether the compiled
program still computes the same bits: what the test suite's time (mostly compilation) gains from a
flag. On jaxlib 0.10 the suite compiles with level 1 and the fusion emitters off (tests/conftest.py).

    python -m bench.compile_flags

For each flag set (in a fresh process, the compilation cache off): the seconds to compile a
ResNet-18 (width 4) and a small CNN SGD step on 16 8×8×3 images, the milliseconds of one step
after that (the median of 20), and a SHA-1 of the updates; a flag that changes the hash rounds
differently (the tests' tolerances must cover it).
"""

from __future__ import annotations

import os
import subprocess
import sys

FLAG_SETS = [
    "",
    "--xla_backend_optimization_level=1",
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_llvm_disable_expensive_passes=true",
    "--xla_cpu_parallel_codegen_split_count=1",
    "--xla_cpu_enable_concurrency_optimized_scheduler=false",
    "--xla_backend_optimization_level=1 --xla_cpu_use_fusion_emitters=false",
    "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
]


def measure() -> None:
    """In this process (its XLA_FLAGS already set): compile time and result hash per program."""
    import hashlib
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from visionax import models

    jax.config.update("jax_enable_compilation_cache", False)
    rng = jax.random.key(0)
    images = jax.random.normal(rng, (16, 8, 8, 3))
    for name, options in [("resnet18", dict(width=4)), ("small_cnn", dict(widths=(8, 16, 32)))]:
        model = models.get_model(name, num_classes=10, **options)
        variables = model.init(rng, images, train=False)

        def step(params, images, model=model, variables=variables):
            def loss(params):
                logits, _ = model.apply({**variables, "params": params}, images, train=True, mutable=["batch_stats"])
                return jnp.mean(logits ** 2)
            sgd = optax.sgd(0.1)
            return sgd.update(jax.grad(loss)(params), sgd.init(params), params)[0]

        start = time.perf_counter()
        compiled = jax.jit(step).lower(variables["params"], images).compile()
        seconds = time.perf_counter() - start
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(compiled(variables["params"], images))]
        digest = hashlib.sha1(b"".join(leaf.tobytes() for leaf in leaves)).hexdigest()[:10]
        step_times = []
        for _ in range(20):
            start = time.perf_counter()
            jax.block_until_ready(compiled(variables["params"], images))
            step_times.append(time.perf_counter() - start)
        print(f"{name}\t{seconds:.2f}\t{digest}\t{1e3 * np.median(step_times):.2f}", flush=True)


def main() -> None:
    print(f"{'flags':72s} {'compile: resnet18 s':>19s} {'small_cnn s':>11s} {'step: resnet18 ms':>17s} "
          f"{'small_cnn ms':>12s}  same bits as default")
    default = None
    for flags in FLAG_SETS:
        result = subprocess.run([sys.executable, "-m", "bench.compile_flags", "--measure"], capture_output=True,
                                text=True, env={**os.environ, "XLA_FLAGS": flags})
        if result.returncode != 0:
            print(f"{flags:72s} failed: {result.stderr.strip().splitlines()[-1]}")
            continue
        rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
        hashes = [row[2] for row in rows]
        default = default or hashes
        same = "yes" if hashes == default else "no"
        print(f"{flags or '(default)':72s} {rows[0][1]:>19s} {rows[1][1]:>11s} {rows[0][3]:>17s} {rows[1][3]:>12s}  {same}")


if __name__ == "__main__":
    measure() if "--measure" in sys.argv else main()
