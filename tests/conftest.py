"""Test setup: eight fake CPU devices, set before JAX is imported anywhere; shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402,F401  (must come after XLA_FLAGS)
import pytest  # noqa: E402



@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> str:
    """A TFDS data directory with the embedded digits prepared once per test session."""
    from visionax import data

    directory = str(tmp_path_factory.mktemp("tfds"))
    data.load_arrays("digits", "train", data_dir=directory)
    return directory
