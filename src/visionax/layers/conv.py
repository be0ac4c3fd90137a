"""Convolution implementations selectable for every Flax convolution in visionax (config `conv_impl`)."""

from __future__ import annotations

import functools

import flax.linen as nn
from jax import lax

from visionax.errors import UserError

CONV_IMPLS = ("xla", "gemm", "auto")


def conv_general_dilated_for(impl: str):
    """The function with `lax.conv_general_dilated`'s signature that implements `impl`."""
    if impl not in CONV_IMPLS:
        raise UserError(f"unknown conv_impl {impl!r}; choose one of {', '.join(CONV_IMPLS)}")
    return lax.conv_general_dilated


def conv_module(impl: str = "xla"):
    """`nn.Conv` whose convolution is computed by `impl` ("xla", "gemm" or "auto")."""
    return functools.partial(nn.Conv, conv_general_dilated=conv_general_dilated_for(impl))
