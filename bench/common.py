"""Shared helpers of the benchmarks: the matmul peak of this machine, timing."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp


def matmul_peak(n: int = 2048, reps: int = 5, dtype=jnp.float32) -> float:
    """Best FLOP/s of an n×n×n `jnp.dot` on the default device (the roofline for fractions)."""
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda a, b: a @ b)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def best_time(fn, reps: int) -> tuple[float, list[float]]:
    """(best, all) seconds of `reps` calls of fn(), each blocked until ready."""
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return min(times), times
