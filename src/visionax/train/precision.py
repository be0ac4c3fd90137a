"""Computation dtypes by name: float32, or bfloat16 activations with float32 parameters."""

import jax.numpy as jnp

from visionax.errors import UserError

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The activation dtype called `name` (parameters always stay float32)."""
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[name]
