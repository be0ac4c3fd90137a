"""Test setup: eight fake CPU devices, set before JAX is imported anywhere; a compilation cache
shared by the test workers of one run; shared fixtures."""

import os
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The same programs (an experiment's step, a model's forward pass) are compiled by several tests,
# both xdist workers and the subprocesses some tests start: compile each once per test run.
run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid{os.getpid()}")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"visionax-jax-cache-{run_id}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import jax  # noqa: E402,F401  (must come after XLA_FLAGS)
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """A TFDS data directory with the embedded digits prepared once per test session."""
    from visionax import data

    directory = str(tmp_path_factory.mktemp("tfds"))
    data.load_arrays("digits", "train", data_dir=directory)
    return directory
