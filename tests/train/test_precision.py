"""Computation dtypes by name."""

import jax.numpy as jnp
import pytest

from visionax.errors import UserError
from visionax.train.precision import compute_dtype


def test_dtypes_by_name():
    assert compute_dtype("float32") == jnp.float32 and compute_dtype("bfloat16") == jnp.bfloat16
    with pytest.raises(UserError, match="unknown dtype 'float8'; choose one of float32, bfloat16"):
        compute_dtype("float8")
