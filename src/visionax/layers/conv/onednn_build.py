"""Building and loading `onednn.cc`, the oneDNN convolutions' FFI library, so that it never breaks a
run.

`load()` needs x86-64 Linux and a `toolchain()`: the oneDNN wheels (`onednn-cpu-gomp`,
`onednn-devel-cpu-gomp`, dependencies of visionax there), found through their distributions'
file lists (`importlib.metadata`: the `libdnnl.so` of the one, the `include/oneapi/dnnl/dnnl.hpp`
of the other, wherever pip put them: a virtual environment, the system Python, `pip --user`), a
C++ compiler (`$CXX`, else `g++`, else `c++`) and jaxlib's XLA FFI headers. The library is built
once per `cache_key` (a hash of the source, the package versions, the compiler's path and
`--version`, the oneDNN directories and the platform: machine, system, C library) into
`$VISIONAX_CACHE` (default `~/.cache/visionax`); later processes load it from there. What can go
wrong, and what happens then:

* a cached library that is not a complete x86-64 ELF file (truncated: dlopen would map it and
  die of SIGBUS, so it is checked first), or that does not load or lacks the three handlers: it
  is rebuilt once, atomically, and the new build loaded;
* a cache directory that cannot be written: the library is built in a temporary directory for
  this process only, with one warning that names `$VISIONAX_CACHE`;
* not x86-64 Linux, no wheels, no compiler, a failed build, or a fresh build that does not load:
  `load()` raises a one-line UserError naming the fix (what `conv_impl="onednn"` shows), and
  `available()` is False, so that `conv_impl="auto"` uses the portable convolutions, with one
  warning except where oneDNN cannot apply by design (not x86-64 Linux).

Loading sets `OMP_WAIT_POLICY=PASSIVE` unless the environment already sets it, so that oneDNN's
OpenMP threads sleep between convolutions (GNU OpenMP's spinning threads took the cores from the
XLA threads running the next fused ops: 8 % of a ResNet-18 step here).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import pathlib
import platform
import shutil
import struct
import subprocess
import tempfile
import warnings
from typing import NamedTuple

import jax

from visionax.errors import UserError

__all__ = ["TARGET_PREFIX", "Toolchain", "available", "cache_dir", "cache_key", "cached_library",
           "load", "open_library", "supported_platform", "toolchain"]

SOURCE = pathlib.Path(__file__).with_name("onednn.cc")
# FFI target of each pass (TARGET_PREFIX + pass) -> the handler symbol onednn.cc exports for it
TARGET_PREFIX = "visionax_onednn_conv_"
_SYMBOLS = {
    "forward": "VisionaxOnednnConvForward",
    "backward_data": "VisionaxOnednnConvBackwardData",
    "backward_weights": "VisionaxOnednnConvBackwardWeights",
}
_RUNTIME, _DEVEL = "onednn-cpu-gomp", "onednn-devel-cpu-gomp"
_INSTALL = f"pip install '{_RUNTIME}==2023.2.0' '{_DEVEL}==2023.2.0'"
_NO_ONEDNN = "use conv_impl='auto' or 'gemm'"
# XLA's FFI registry lives as long as the process and refuses a second handler under a name (a
# refusal before the backend starts makes it fail to start): the handlers of the first library
# loaded stay registered, whatever is loaded later.
_REGISTERED: dict[str, ctypes.CDLL] = {}


class Toolchain(NamedTuple):
    """Everything a build of `source` depends on besides the platform."""

    source: pathlib.Path
    compiler: str  # absolute path
    compiler_version: str  # its `--version` output
    include_dirs: tuple[pathlib.Path, ...]  # XLA FFI headers, oneDNN headers
    lib_dir: pathlib.Path  # holds libdnnl.so (also the library's rpath)
    versions: str  # "jaxlib=…,onednn-cpu-gomp=…,onednn-devel-cpu-gomp=…"


def supported_platform() -> bool:
    """Whether oneDNN convolutions exist for this platform: x86-64 Linux (the wheels' platform)."""
    return platform.system() == "Linux" and platform.machine() == "x86_64"


def _installed_file(distribution: str, suffix: str) -> pathlib.Path:
    """The file of the installed `distribution` whose path ends with `suffix`, from the
    distribution's own file list (its RECORD), so wherever the installer put it."""
    try:
        files = importlib.metadata.distribution(distribution).files or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if ("/" + file.as_posix()).endswith("/" + suffix):
            # the listed path, its ".." resolved (e.g. "../../libdnnl.so" from site-packages)
            path = pathlib.Path(file.locate())
            path = path.parent.resolve() / path.name
            if path.is_file():
                return path
    raise UserError(f"conv_impl='onednn' needs the oneDNN wheels ({distribution} with its "
                    f"{suffix} is not installed): {_INSTALL}, or {_NO_ONEDNN}")


def _versions() -> str:
    found = []
    for name in ("jaxlib", _RUNTIME, _DEVEL):
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}=?")
    return ",".join(found)


def _compiler() -> tuple[str, str]:
    """(path, `--version` output) of the C++ compiler: `$CXX`, else g++, else c++ on the PATH."""
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if compiler is None:
        raise UserError("conv_impl='onednn' compiles a small C++ file on first use and found no "
                        f"C++ compiler; install g++ (or set CXX), or {_NO_ONEDNN}")
    try:
        result = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                check=False, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        raise UserError(f"the C++ compiler {compiler} does not run ({error}); install g++ (or set "
                        f"CXX), or {_NO_ONEDNN}") from None
    if result.returncode != 0:
        raise UserError(f"the C++ compiler {compiler} fails on --version; install g++ (or set "
                        f"CXX), or {_NO_ONEDNN}")
    return compiler, result.stdout.strip()


def toolchain(source: pathlib.Path = SOURCE) -> Toolchain:
    """The toolchain that builds `source` here; a one-line UserError naming what is missing."""
    header = _installed_file(_DEVEL, "include/oneapi/dnnl/dnnl.hpp")
    library = _installed_file(_RUNTIME, "libdnnl.so")
    compiler, version = _compiler()
    return Toolchain(source, compiler, version, (pathlib.Path(jax.ffi.include_dir()),
                                                 header.parents[2]), library.parent, _versions())


def cache_key(chain: Toolchain) -> str:
    """16 hex digits of a SHA-256 over the source, the versions, the compiler (path and
    `--version`), the oneDNN directories and the platform (machine, system, C library)."""
    parts = [chain.source.read_bytes(), chain.versions, chain.compiler, chain.compiler_version,
             *map(str, chain.include_dirs), str(chain.lib_dir), platform.machine(),
             platform.system(), " ".join(platform.libc_ver())]
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def cache_dir() -> pathlib.Path:
    """`$VISIONAX_CACHE`, else `~/.cache/visionax`."""
    return pathlib.Path(os.environ.get("VISIONAX_CACHE") or
                        os.path.expanduser(os.path.join("~", ".cache", "visionax")))


def cached_library(chain: Toolchain, cache: pathlib.Path) -> pathlib.Path:
    """Where the library of `chain` is cached in `cache`."""
    return cache / f"onednn_conv-{cache_key(chain)}.so"


# ELF64 file header and program header (little endian), as <elf.h> lays them out
_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_PROGRAM_HEADER = struct.Struct("<IIQQQQQQ")


def _complete_elf(data: bytes) -> bool:
    """Whether `data` is a whole x86-64 ELF shared object: its magic, class, byte order, type and
    machine, and every part the headers locate (program and section header tables, segments)
    inside the file. GNU ld writes the section headers last, so a truncated file fails here."""
    if len(data) < _ELF_HEADER.size:
        return False
    (ident, kind, machine, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum,
     _) = _ELF_HEADER.unpack_from(data)
    if ident[:6] != b"\x7fELF\x02\x01" or kind != 3 or machine != 62:  # 64-bit LSB ET_DYN x86-64
        return False
    if (phentsize != _PROGRAM_HEADER.size or phoff + phnum * phentsize > len(data)
            or shoff + shnum * shentsize > len(data)):
        return False
    for index in range(phnum):
        _, _, offset, _, _, file_size, _, _ = _PROGRAM_HEADER.unpack_from(
            data, phoff + index * phentsize)
        if offset + file_size > len(data):
            return False
    return True


def _open(path: pathlib.Path) -> ctypes.CDLL:
    """The library at `path`, loaded; OSError if it is missing, incomplete, does not load or lacks
    a handler."""
    if not _complete_elf(path.read_bytes()):
        raise OSError(f"{path} is not a complete x86-64 shared library")
    handle = ctypes.CDLL(str(path))
    missing = [symbol for symbol in _SYMBOLS.values() if not hasattr(handle, symbol)]
    if missing:
        raise OSError(f"{path} lacks {', '.join(missing)}")
    return handle


def _compile(chain: Toolchain, output: pathlib.Path) -> None:
    command = [
        chain.compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w",
        *(f"-I{include}" for include in chain.include_dirs), str(chain.source),
        f"-L{chain.lib_dir}", "-ldnnl", f"-Wl,-rpath,{chain.lib_dir}", "-o", str(output),
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise UserError(f"building the oneDNN convolution failed ({' '.join(command)}): "
                        f"{error}") from None
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or ["no output"]
        first_error = next((line for line in lines if "error" in line), lines[-1])
        raise UserError(f"building the oneDNN convolution failed ({' '.join(command)}): "
                        f"{first_error.strip()}")


def _build_and_open(chain: Toolchain, library: pathlib.Path) -> ctypes.CDLL:
    """Compile into a scratch file beside `library`, load it from there, then move it into place
    (`os.replace`, atomic): concurrent builders and readers never see half a file, and the handle
    is the new build even where a broken library of the same name was loaded before. OSError
    where the directory cannot be written; UserError where the build fails or does not load."""
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as scratch:
        built = pathlib.Path(scratch) / library.name
        _compile(chain, built)
        try:
            handle = _open(built)
        except OSError as error:
            raise UserError(f"the freshly built oneDNN convolution library does not load "
                            f"({error}); {_NO_ONEDNN}") from None
        os.replace(built, library)
    return handle


def open_library(chain: Toolchain, cache: pathlib.Path) -> ctypes.CDLL:
    """The library of `chain`, loaded: from `cache` if it is there and sound, else built (once)
    into `cache`, else, where `cache` cannot be written, into a temporary directory (one warning).
    """
    library = cached_library(chain, cache)
    try:
        return _open(library)
    except OSError:
        pass  # not built yet, or truncated, garbage, another build's: (re)built below
    try:
        return _build_and_open(chain, library)
    except OSError as error:
        unwritable = error
    with tempfile.TemporaryDirectory(prefix="visionax-onednn-") as scratch:
        handle = _build_and_open(chain, pathlib.Path(scratch) / library.name)
    warnings.warn(f"the oneDNN convolutions were built for this process only: the cache {cache} "
                  f"cannot be written ({unwritable.strerror or unwritable}); set VISIONAX_CACHE "
                  "to a writable directory", stacklevel=2)
    return handle


def _register(handle: ctypes.CDLL) -> None:
    """Register the handlers of `handle` with XLA for the CPU, where no library of this process
    did yet (see `_REGISTERED`)."""
    for name, symbol in _SYMBOLS.items():
        target = TARGET_PREFIX + name
        if target not in _REGISTERED:
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)),
                                        platform="cpu")
            _REGISTERED[target] = handle


@functools.cache
def load() -> ctypes.CDLL:
    """Build (once per `cache_key`) and load the FFI library, and register its three handlers with
    XLA for the CPU. Raises a one-line UserError naming what is missing."""
    if not supported_platform():
        raise UserError(f"conv_impl='onednn' needs x86-64 Linux, not {platform.system()} "
                        f"{platform.machine()}; {_NO_ONEDNN}")
    chain = toolchain()
    # read when libgomp loads, i.e. with the library
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        handle = open_library(chain, cache_dir())
    except OSError as error:
        raise UserError(f"the oneDNN convolutions could not be built or loaded ({error}); set "
                        f"VISIONAX_CACHE to a writable directory, or {_NO_ONEDNN}") from None
    _register(handle)
    return handle


@functools.cache
def available() -> bool:
    """Whether `load()` succeeds here. False without a warning where oneDNN cannot apply by design
    (not x86-64 Linux); False with one warning naming the reason where it could but fails: an
    optional accelerator, whatever goes wrong with it never stops a run."""
    if not supported_platform():
        return False
    try:
        load()
    except Exception as error:  # noqa: BLE001 -- see the docstring
        reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        warnings.warn(f"oneDNN convolutions are unavailable, conv_impl='auto' uses the slower "
                      f"patch-based CPU convolutions: {reason}", stacklevel=2)
        return False
    return True
