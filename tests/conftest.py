"""Test setup: eight fake CPU devices, set before JAX is imported anywhere; a persistent compilation
cache shared by the test workers and by the runs after; shared fixtures."""

import importlib.metadata
import os

flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
# Compiling is most of the suite's time (64% of it on an empty cache: XLA's CPU backend optimising
# thousands of small programs that each run a few times). The tests check formulas, not XLA's
# optimiser: on jaxlib 0.10 they compile at optimisation level 1 without the fusion emitters, 2-3×
# less compile time for steps as fast (BUILD_NOTES.md, "Where the suite's time goes"). Not on jaxlib
# 0.12 yet: it has no fusion-emitter flag (XLA aborts on an unknown one), and at level 1 alone MoCo's
# shipped 8-vs-1-device step ends 0.68% off in one BatchNorm bias, not yet explained. Give either flag
# in XLA_FLAGS to test with your own setting.
jaxlib_version = tuple(int(part) for part in importlib.metadata.version("jaxlib").split(".")[:2])
if jaxlib_version <= (0, 10):
    if "--xla_backend_optimization_level" not in flags:
        flags += " --xla_backend_optimization_level=1"
    if "--xla_cpu_use_fusion_emitters" not in flags:
        flags += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = flags.strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The programs the tests compile (an experiment's step, a model's forward pass) are the same in every
# run, in both xdist workers and in the subprocesses some tests start: XLA compiles each once per
# machine into a persistent cache (JAX's key covers the program, the compile options, the jax and
# jaxlib versions and the devices), `$VISIONAX_CACHE/jax-compilation-cache` (`~/.cache/visionax` by
# default, as visionax.layers.conv.onednn_build.cache_dir, which cannot be imported before jax reads
# these variables; JAX_COMPILATION_CACHE_DIR chooses another folder, CI a fresh one per run).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.environ.get("VISIONAX_CACHE") or os.path.expanduser(os.path.join("~", ".cache", "visionax")),
    "jax-compilation-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import jax  # noqa: E402,F401  (must come after XLA_FLAGS)
import pytest  # noqa: E402


def pytest_collection_modifyitems(items):
    """The modules marked `long` first, each in its order: xdist hands whole modules to the workers
    (--dist loadfile) in collection order, and the long ones handed out last would leave one worker
    finishing alone."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """A TFDS data directory with the embedded digits prepared once per test session."""
    from visionax import data

    directory = str(tmp_path_factory.mktemp("tfds"))
    data.load_arrays("digits", "train", data_dir=directory)
    return directory
