"""Computation dtypes by name: float32, or bfloat16 activations with float32 parameters."""

import jax.numpy as jnp

from visionax import registry

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def compute_dtype(name: str):
    """The activation dtype called `name` (parameters always stay float32)."""
    return registry.lookup(DTYPES, name, "dtype")
