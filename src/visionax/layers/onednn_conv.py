"""2-D float32 convolutions on the CPU through oneDNN, the kernel library of PyTorch's CPU
convolutions, called from XLA as typed FFI custom calls (`onednn_conv.cc`).

`convolve(x, w, geometry)` computes y[n, i, j, o] = Σ_{a, b, c} x_pad[n, i·s₀ + a·d₀, j·s₁ + b·d₁,
g(o)·C_g + c] · w[a, b, c, o] for x `[batch, height, width, in_features]` and w `[kernel_h,
kernel_w, in_features / groups, out_features]`; its gradients are oneDNN's backward-data and
backward-weights primitives (a `jax.custom_vjp`). `visionax.layers.conv` routes
`conv_impl="onednn"` (and `"auto"` on the CPU) here for the convolutions this covers.

The C++ source is compiled with the system C++ compiler on first use, against the oneDNN wheels
(`onednn-cpu-gomp`, `onednn-devel-cpu-gomp`, dependencies of visionax on x86-64 Linux) and the XLA
FFI headers of the installed jaxlib, into `$VISIONAX_CACHE` (default `~/.cache/visionax`), keyed by
a hash of the source and those versions; later processes load the cached library. Loading it
sets `OMP_WAIT_POLICY=PASSIVE` unless the environment already sets it, so that oneDNN's OpenMP
threads sleep between convolutions.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from visionax.errors import UserError

__all__ = ["Geometry", "applies", "available", "convolve", "load"]

_SOURCE = pathlib.Path(__file__).with_name("onednn_conv.cc")
_TARGETS = {
    "forward": "VisionaxOnednnConvForward",
    "backward_data": "VisionaxOnednnConvBackwardData",
    "backward_weights": "VisionaxOnednnConvBackwardWeights",
}
_INSTALL = "pip install 'onednn-cpu-gomp==2023.2.0' 'onednn-devel-cpu-gomp==2023.2.0'"


class Geometry(NamedTuple):
    """Static part of a 2-D convolution: strides, (low, high) zero padding per side (non-negative),
    kernel dilation (1 = none) and feature groups."""

    strides: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]
    dilation: tuple[int, int]
    groups: int

    def attributes(self) -> dict:
        return {
            "strides": np.asarray(self.strides, np.int64),
            "pad_lo": np.asarray([lo for lo, _ in self.pads], np.int64),
            "pad_hi": np.asarray([hi for _, hi in self.pads], np.int64),
            "dilation": np.asarray(self.dilation, np.int64),
            "groups": np.int64(self.groups),
        }


def applies(x, w, pads, lhs_dilation, preferred_element_type) -> bool:
    """Whether oneDNN computes this convolution: 2-D, float32 in and out, non-negative padding, no
    input dilation (the rest goes to the patch-based paths of `visionax.layers.conv`)."""
    return (
        x.ndim == 4
        and x.dtype == jnp.float32
        and w.dtype == jnp.float32
        and preferred_element_type in (None, jnp.dtype(jnp.float32))
        and all(lo >= 0 and hi >= 0 for lo, hi in pads)
        and all(d == 1 for d in lhs_dilation)
    )


def _prefix_with(relative: str) -> pathlib.Path | None:
    """The installation prefix (this environment's, then the base one) that holds `relative`."""
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix)):
        if (pathlib.Path(prefix) / relative).exists():
            return pathlib.Path(prefix)
    return None


def _versions() -> str:
    names = ("jaxlib", "onednn-cpu-gomp", "onednn-devel-cpu-gomp")
    found = []
    for name in names:
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}=?")
    return ",".join(found)


def _build(library: pathlib.Path, include: pathlib.Path, lib_dir: pathlib.Path) -> None:
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if compiler is None:
        raise UserError("conv_impl='onednn' compiles a small C++ file on first use and found no "
                        "C++ compiler; install g++ (or set CXX), or use conv_impl='gemm'")
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
        built = pathlib.Path(scratch) / library.name
        command = [
            compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
            f"-I{jax.ffi.include_dir()}", f"-I{include}", str(_SOURCE),
            f"-L{lib_dir}", "-ldnnl", f"-Wl,-rpath,{lib_dir}", "-o", str(built),
        ]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            lines = result.stderr.strip().splitlines() or ["no output"]
            first_error = next((line for line in lines if "error" in line), lines[-1])
            raise UserError(f"building the oneDNN convolution failed ({' '.join(command)}): "
                            f"{first_error.strip()}")
        os.replace(built, library)  # atomic: concurrent builders (pytest -n) never see half a file


@functools.cache
def load() -> ctypes.CDLL:
    """Build (once per source and versions) and load the FFI library, and register its three
    handlers with XLA for the CPU. Raises UserError naming what is missing."""
    if not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"):
        raise UserError("conv_impl='onednn' needs x86-64 Linux; use conv_impl='auto' or 'gemm'")
    include_prefix = _prefix_with("include/oneapi/dnnl/dnnl.hpp")
    lib_prefix = _prefix_with("lib/libdnnl.so")
    if include_prefix is None or lib_prefix is None:
        raise UserError(f"conv_impl='onednn' needs the oneDNN wheels: {_INSTALL}")
    digest = hashlib.sha256(_SOURCE.read_bytes() + _versions().encode() + str(lib_prefix).encode())
    cache = pathlib.Path(os.environ.get("VISIONAX_CACHE", pathlib.Path.home() / ".cache" / "visionax"))
    library = cache / f"onednn_conv-{digest.hexdigest()[:16]}.so"
    if not library.exists():
        _build(library, include_prefix / "include", lib_prefix / "lib")
    # GNU OpenMP's threads otherwise spin after each convolution, taking the cores from the XLA
    # threads that run the next fused ops (8 % of a ResNet-18 step here); read when libgomp loads
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    handle = ctypes.cdll.LoadLibrary(str(library))
    for name, symbol in _TARGETS.items():
        jax.ffi.register_ffi_target(
            f"visionax_onednn_conv_{name}", jax.ffi.pycapsule(getattr(handle, symbol)), platform="cpu")
    return handle


@functools.cache
def available() -> bool:
    """Whether `load()` succeeds here (a compiler, the oneDNN wheels, x86-64 Linux); warns once
    with the reason where it does not."""
    try:
        load()
    except UserError as error:
        warnings.warn(f"oneDNN convolutions are unavailable, conv_impl='auto' uses the slower "
                      f"patch-based CPU convolutions: {error}", stacklevel=2)
        return False
    return True


def _varying_axes(array) -> frozenset:
    """The shard_map mesh axes along which `array` differs between devices (empty outside)."""
    axis_type = getattr(jax.typeof(array), "manual_axis_type", None)
    return frozenset(axis_type.varying) if axis_type is not None else frozenset()


def _call(name: str, result_shape: tuple[int, ...], geometry: Geometry, *operands):
    """The FFI call `name` on `operands`. Inside shard_map the operands are first made varying
    over the same mesh axes, and the result is typed as varying over them too (an FFI result
    carries only the type it is given)."""
    load()
    varying = frozenset().union(*map(_varying_axes, operands))
    operands = [jax.lax.pcast(o, tuple(varying - _varying_axes(o)), to="varying")
                if varying - _varying_axes(o) else o for o in operands]
    out = jax.typeof(operands[0]).update(shape=result_shape, dtype=jnp.float32)
    # under vmap one call per example: correct for any batching, if not fast
    call = jax.ffi.ffi_call(f"visionax_onednn_conv_{name}", out, vmap_method="sequential")
    return call(*operands, **geometry.attributes())


def _output_shape(x_shape, w_shape, geometry: Geometry) -> tuple[int, ...]:
    """The output shape by lax's own shape rule for the same convolution."""
    convolution = functools.partial(
        jax.lax.conv_general_dilated, window_strides=geometry.strides, padding=geometry.pads,
        rhs_dilation=geometry.dilation, feature_group_count=geometry.groups,
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.eval_shape(convolution, jax.ShapeDtypeStruct(x_shape, jnp.float32),
                          jax.ShapeDtypeStruct(w_shape, jnp.float32)).shape


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def convolve(x: jax.Array, w: jax.Array, geometry: Geometry) -> jax.Array:
    """The convolution `[batch, out_height, out_width, out_features]` of x `[batch, height, width,
    in_features]` with w `[kernel_h, kernel_w, in_features / groups, out_features]` (float32)."""
    return _call("forward", _output_shape(x.shape, w.shape, geometry), geometry, x, w)


def _convolve_forward(x, w, geometry):
    return convolve(x, w, geometry), (x, w)


def _summed_like(cotangent, primal):
    """`cotangent` summed over the shard_map axes along which it varies but `primal` does not (the
    transpose of making `primal` varying, as JAX's own convolution gradient does)."""
    extra = _varying_axes(cotangent) - _varying_axes(primal)
    return jax.lax.psum(cotangent, tuple(sorted(extra))) if extra else cotangent


def _convolve_backward(geometry, residuals, dy):
    x, w = residuals
    dx = _call("backward_data", x.shape, geometry, dy, w)
    dw = _call("backward_weights", w.shape, geometry, x, dy)
    return _summed_like(dx, x), _summed_like(dw, w)


convolve.defvjp(_convolve_forward, _convolve_backward)
