"""The oneDNN library never breaks a run: with an unwritable cache, a truncated or garbage cached
library, no compiler, another platform or no wheels, conv_impl="auto" still equals
lax.conv_general_dilated (values and gradients), warns at most once (never where oneDNN cannot
apply by design) and raises nothing, and conv_impl="onednn" is a one-line UserError where it
cannot work. The wheels are found through their distributions' file lists, and the cache key
covers the compiler and the platform."""

import contextlib
import ctypes
import importlib.metadata
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings

import jax
import pytest

from tests.layers.conv.cases import DN, check, inputs
from visionax.errors import UserError
from visionax.layers.conv import conv_general_dilated_for, onednn_build

pytestmark = pytest.mark.skipif(not onednn_build.supported_platform(),
                                reason="oneDNN convolutions are built for x86-64 Linux only")

KW = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN)
FORWARD = onednn_build.TARGET_PREFIX + "forward"
HANDLERS = ("VisionaxOnednnConvForward", "VisionaxOnednnConvBackwardData",
            "VisionaxOnednnConvBackwardWeights")


@pytest.fixture(autouse=True)
def fresh_state():
    """load() and available() keep their outcome for the process: each test starts without one
    and leaves none to the tests after it."""
    onednn_build.load.cache_clear()
    onednn_build.available.cache_clear()
    yield
    onednn_build.load.cache_clear()
    onednn_build.available.cache_clear()


def _equals_lax(impl: str = "auto", side: int = 8) -> str:
    """Checks conv_impl `impl`'s value and gradients against lax; the forward pass's HLO."""
    x, w, rng = inputs(side, (side, side), (3, 3), 4, 6, 1)
    conv = conv_general_dilated_for(impl)
    check(conv, x, w, rng, **KW)
    return jax.jit(lambda x, w: conv(x, w, **KW)).lower(x, w).as_text()


@contextlib.contextmanager
def every_warning():
    """The messages of the warnings raised inside, repeats included (pytest's own "default" filter
    would show a warning repeated from the same line once, hiding what these tests count)."""
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield messages
    messages.extend(str(warning.message) for warning in caught)


def _one_line_user_error(impl: str = "onednn") -> str:
    with pytest.raises(UserError) as error:
        _equals_lax(impl)
    assert "\n" not in str(error.value)
    return str(error.value)


def _loads_with_handlers(path, scratch) -> bool:
    """Whether the library at `path` loads with the three handlers, as in a new process: loaded
    from a copy in `scratch` (dlopen would return a library loaded before from the same path)."""
    copy = pathlib.Path(scratch) / "copy.so"
    shutil.copyfile(path, copy)
    handle = ctypes.CDLL(str(copy))
    return all(hasattr(handle, symbol) for symbol in HANDLERS)


def test_the_library_builds_loads_and_computes(tmp_path):
    with every_warning() as messages:
        assert onednn_build.available()
        assert FORWARD in _equals_lax("auto") and FORWARD in _equals_lax("onednn")
    assert messages == []
    chain = onednn_build.toolchain()
    assert _loads_with_handlers(onednn_build.cached_library(chain, onednn_build.cache_dir()),
                                tmp_path)


def _real_library_path() -> pathlib.Path:
    onednn_build.load()
    return onednn_build.cached_library(onednn_build.toolchain(), onednn_build.cache_dir())


@pytest.fixture
def builds(monkeypatch) -> list:
    """The real g++ build is what test_the_library_builds_loads_and_computes, the wheels test and
    test_failed_builds_are_one_line_user_errors check; the tests of what happens around a build
    (where it goes, what replaces a broken file) get a copy of that one build instead of ~10 s of
    g++ each. The list of the toolchains `_compile` was called with."""
    built, calls = _real_library_path(), []
    onednn_build.load.cache_clear()  # the test loads for itself

    def copy_of_the_real_build(chain, output):
        calls.append(chain)
        shutil.copyfile(built, output)

    monkeypatch.setattr(onednn_build, "_compile", copy_of_the_real_build)
    return calls


@pytest.mark.parametrize("how", ["parent_is_a_file", "read_only"])
def test_unwritable_cache_builds_for_this_process_with_one_warning(how, tmp_path, monkeypatch, builds):
    if how == "parent_is_a_file":
        (tmp_path / "file").write_text("")
        cache = tmp_path / "file" / "cache"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories")
        cache = tmp_path / "cache"
        cache.mkdir(mode=0o555)
    monkeypatch.setenv("VISIONAX_CACHE", str(cache))
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with every_warning() as messages:
        assert FORWARD in _equals_lax("auto")
        assert FORWARD in _equals_lax("onednn", side=6)
    (message,) = messages
    assert "built for this process only" in message and str(cache) in message
    assert "VISIONAX_CACHE" in message
    assert list(scratch.iterdir()) == []  # the temporary build is gone once loaded
    assert len(builds) == 1  # built once, then loaded from the process's registration
    assert how == "read_only" or not cache.exists()


def _real_library() -> bytes:
    return _real_library_path().read_bytes()


def _library_without_handlers(tmp_path) -> bytes:
    source = tmp_path / "other.cc"
    source.write_text('extern "C" int other() { return 1; }\n')
    subprocess.run([shutil.which("g++") or "c++", "-shared", "-fPIC", str(source), "-o",
                    str(tmp_path / "other.so")], check=True)
    return (tmp_path / "other.so").read_bytes()


BROKEN = {
    # dlopen maps a truncated file and dies of SIGBUS on its first missing page
    "truncated_to_one_page": lambda tmp_path: _real_library()[:4096],
    "section_headers_cut": lambda tmp_path: _real_library()[:-100],
    "empty": lambda tmp_path: b"",
    "garbage": lambda tmp_path: b"not a shared library\n" * 200,
    "another_library": _library_without_handlers,
}


@pytest.mark.parametrize("broken", BROKEN)
def test_broken_cached_library_is_rebuilt_once_without_warning(broken, tmp_path, monkeypatch, builds):
    content = BROKEN[broken](tmp_path)
    onednn_build.load.cache_clear()
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("VISIONAX_CACHE", str(cache))
    library = onednn_build.cached_library(onednn_build.toolchain(), cache)
    library.write_bytes(content)
    with every_warning() as messages:
        assert FORWARD in _equals_lax("auto")
    assert messages == []
    rebuilt = library.read_bytes()
    assert rebuilt != content and rebuilt[:4] == b"\x7fELF"
    assert _loads_with_handlers(library, tmp_path)
    assert sorted(path.name for path in cache.iterdir()) == [library.name]  # no scratch left
    assert len(builds) == 1


@pytest.mark.parametrize("compiler", ["none_on_the_path", "one_that_fails"])
def test_missing_compiler_falls_back_with_one_warning(compiler, tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONAX_CACHE", str(tmp_path / "cache"))
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    if compiler == "none_on_the_path":
        monkeypatch.delenv("CXX", raising=False)
        reason = "found no C++ compiler"
    else:
        monkeypatch.setenv("CXX", shutil.which("false", path="/bin:/usr/bin"))
        reason = "fails on --version"
    with every_warning() as messages:
        assert FORWARD not in _equals_lax("auto")
        assert FORWARD not in _equals_lax("auto", side=6)  # another shape: no second warning
        error = _one_line_user_error("onednn")
    (message,) = messages
    assert "conv_impl='auto' uses the slower patch-based" in message and reason in message
    assert reason in error and "install g++ (or set CXX)" in error


@pytest.mark.parametrize("system,machine", [("Linux", "aarch64"), ("Darwin", "x86_64"),
                                            ("Windows", "AMD64")])
def test_other_platforms_use_the_portable_convolutions_silently(system, machine, monkeypatch):
    monkeypatch.setattr(platform, "system", lambda: system)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    with every_warning() as messages:
        assert not onednn_build.supported_platform() and not onednn_build.available()
        assert FORWARD not in _equals_lax("auto")
        message = _one_line_user_error("onednn")
    assert messages == []
    assert f"needs x86-64 Linux, not {system} {machine}" in message
    assert "use conv_impl='auto' or 'gemm'" in message


def _fake_wheels(tmp_path, monkeypatch, with_files: bool = True):
    """The two oneDNN distributions installed under a prefix of their own (as `pip --user` or a
    system Python would), their dist-info first on sys.path; their files link to the real ones."""
    prefix = tmp_path / "prefix"
    python = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = prefix / "lib" / python / "site-packages"
    site.mkdir(parents=True)
    real = onednn_build.toolchain()
    headers = prefix / "include" / "oneapi" / "dnnl"
    headers.mkdir(parents=True)
    for header in (real.include_dirs[1] / "oneapi" / "dnnl").iterdir():
        (headers / header.name).symlink_to(header)
    for name in ("libdnnl.so", "libdnnl.so.3"):
        (prefix / "lib" / name).symlink_to(real.lib_dir / name)
    files = {"onednn-cpu-gomp": ["../../libdnnl.so", "../../libdnnl.so.3"],
             "onednn-devel-cpu-gomp": ["../../../include/oneapi/dnnl/dnnl.hpp"]}
    for name, listed in files.items():
        info = site / f"{name.replace('-', '_')}-2023.2.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 2023.2.0\n")
        (info / "RECORD").write_text("".join(f"{path},,\n" for path in listed if with_files))
    monkeypatch.syspath_prepend(str(site))
    assert importlib.metadata.distribution("onednn-cpu-gomp").locate_file("").resolve() == site
    return prefix


def test_wheels_are_found_through_their_file_lists(tmp_path, monkeypatch):
    real = onednn_build.toolchain()
    # this environment's wheels: where pip put them, inside the virtual environment
    assert real.lib_dir == (pathlib.Path(sys.prefix) / "lib").resolve()
    assert (real.include_dirs[1] / "oneapi" / "dnnl" / "dnnl.hpp").is_file()
    prefix = _fake_wheels(tmp_path, monkeypatch)
    chain = onednn_build.toolchain()
    assert chain.lib_dir == prefix / "lib" and chain.include_dirs[1] == prefix / "include"
    assert onednn_build.cache_key(chain) != onednn_build.cache_key(real)
    cache = tmp_path / "cache"
    monkeypatch.setenv("VISIONAX_CACHE", str(cache))
    with every_warning() as messages:
        assert FORWARD in _equals_lax("auto")
    assert messages == []
    assert _loads_with_handlers(onednn_build.cached_library(chain, cache), tmp_path)


def test_wheels_without_their_files_fall_back_with_one_warning(tmp_path, monkeypatch):
    _fake_wheels(tmp_path, monkeypatch, with_files=False)
    monkeypatch.setenv("VISIONAX_CACHE", str(tmp_path / "cache"))
    with every_warning() as messages:
        assert FORWARD not in _equals_lax("auto")
        assert FORWARD not in _equals_lax("auto", side=6)
        error = _one_line_user_error("onednn")
    (message,) = messages
    assert "pip install 'onednn-cpu-gomp==2023.2.0'" in message
    assert "pip install 'onednn-cpu-gomp" in error


def test_cache_key_covers_source_versions_compiler_and_platform(tmp_path, monkeypatch):
    chain = onednn_build.toolchain()
    edited = tmp_path / "onednn.cc"
    edited.write_bytes(chain.source.read_bytes() + b"// edited\n")
    keys = [onednn_build.cache_key(chain)]
    assert onednn_build.cache_key(onednn_build.toolchain()) == keys[0]  # stable
    for changed in (chain._replace(source=edited), chain._replace(versions=chain.versions + "x"),
                    chain._replace(compiler="/opt/other/g++"),
                    chain._replace(compiler_version=chain.compiler_version + " (patched)"),
                    chain._replace(lib_dir=tmp_path),
                    chain._replace(include_dirs=(tmp_path, *chain.include_dirs[1:]))):
        keys.append(onednn_build.cache_key(changed))
    for attribute, value in (("machine", lambda: "aarch64"), ("system", lambda: "FreeBSD"),
                             ("libc_ver", lambda: ("glibc", "2.99"))):
        with monkeypatch.context() as patch:
            patch.setattr(platform, attribute, value)
            keys.append(onednn_build.cache_key(chain))
    assert len(set(keys)) == len(keys) == 10


def test_failed_builds_are_one_line_user_errors(tmp_path):
    chain = onednn_build.toolchain()
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    with pytest.raises(UserError, match="building the oneDNN convolution failed") as error:
        onednn_build.open_library(chain._replace(source=broken), tmp_path / "cache")
    assert "\n" not in str(error.value)
    # a build that compiles but has no handlers is not retried: one build, then an error
    empty = tmp_path / "empty.cc"
    empty.write_text("int unrelated() { return 0; }\n")
    with pytest.raises(UserError, match="freshly built oneDNN convolution library does not load"):
        onednn_build.open_library(chain._replace(source=empty), tmp_path / "cache")
    assert [path.name for path in (tmp_path / "cache").iterdir()] == []
