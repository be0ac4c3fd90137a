"""The command line shared by every experiment: `--config=<file.py>[:variant]`, `--config.key=value`,
`--workdir`, `--help`.

`run` parses the flags, prints the resolved config, the backend and the device count, and calls
`train_and_evaluate(config, workdir)`. `--help` (or `--helpfull`) prints the experiment's docstring
and every config key with its default, and exits 0. Every problem a person can fix (unknown config
key, bad value, missing file, unknown name, indivisible batch, NaN loss) ends the program with one
line naming the problem and the fix and exit status 2, without a traceback.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from typing import Any, Callable, Sequence

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

from visionax import parallel
from visionax.errors import UserError

TrainAndEvaluate = Callable[[ml_collections.ConfigDict, str], Any]
HELP_FLAGS = ("--help", "-h", "--helpfull")

__all__ = ["run", "parse", "fail", "help_text", "flat_config"]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().strip('"').strip("'")
    return " ".join(text.split()) or type(error).__name__


def fail(message: str) -> None:
    """Print `error: <message>` to stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_argument(argv: Sequence[str], default: str) -> str:
    for index, argument in enumerate(argv):
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return default


def _config_file(argument: str) -> str:
    """The file of `--config=<file.py>[:variant]` (a variant is passed to `get_config(variant)`)."""
    path, _, _ = argument.partition(":")
    return path


def flat_config(config: ml_collections.ConfigDict, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf of `config` as `(dotted key, value)`, in definition order."""
    items = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            items += flat_config(value, f"{prefix}{key}.")
        else:
            items.append((prefix + key, value))
    return items


def _load_config(argument: str) -> ml_collections.ConfigDict:
    """`get_config()` (or `get_config(variant)`) of a config file, as ml_collections would call it."""
    path, _, variant = argument.partition(":")
    if not pathlib.Path(path).is_file():
        raise UserError(f"config file {path!r} not found; pass --config=experiments/configs/<name>.py "
                        "(an existing file)")
    spec = importlib.util.spec_from_file_location("visionax_help_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant) if variant else module.get_config()


def help_text(name: str, config_argument: str, docstring: str) -> str:
    """The experiment's docstring, its flags, and every key of its config with the default."""
    config = _load_config(config_argument)
    lines = [docstring.strip(), "", f"usage: python -m experiments.{name} [--config=<file.py>[:variant]] "
             "[--config.<key>=<value> ...] [--workdir=<dir>]", "",
             "flags:",
             f"  --config   the config file (default {config_argument})",
             f"  --workdir  checkpoints, metrics, plots and results.json (default runs/{name})",
             "  --help, --helpfull  this text", "", f"config keys of {config_argument} (defaults):"]
    lines += [f"  --config.{key}={value!r}" for key, value in flat_config(config)]
    return "\n".join(lines)


def parse(argv: Sequence[str], default_config: str | pathlib.Path, name: str):
    """Parse the experiment's flags into `(config, workdir)`; raises UserError on a bad command line."""
    default_config = str(default_config)
    config_argument = _config_argument(argv, default_config)
    config_file = _config_file(config_argument)
    if not pathlib.Path(config_file).is_file():
        raise UserError(
            f"config file {config_file!r} not found; pass --config=experiments/configs/<name>.py "
            "(an existing file)"
        )
    flag_values = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file(
            "config", default_config, "Experiment config (a Python file).",
            flag_values=flag_values, lock_config=True, sys_argv=list(argv),
        )
        flags.DEFINE_string(
            "workdir", None, "Directory for checkpoints, metrics and plots (default runs/<name>).",
            flag_values=flag_values,
        )
        flag_values(list(argv))
        config = flag_values.config
    except (AttributeError, KeyError) as error:
        key = _one_line(error)
        raise UserError(
            f"unknown config key {key!r}; see the keys with --help (override as --config.<key>=<value>)"
        ) from None
    except flags.Error as error:
        raise UserError(f"{_one_line(error)}; run with --help to list the flags and config keys") from None
    except (ValueError, TypeError) as error:
        raise UserError(f"bad config value: {_one_line(error)}") from None
    workdir = flag_values.workdir or str(pathlib.Path("runs") / name)
    return config, workdir


def _describe_run(config: ml_collections.ConfigDict, workdir: str) -> str:
    devices = jax.devices()
    return "\n".join([
        "config:", *(f"  {key} = {value!r}" for key, value in flat_config(config)),
        f"backend {jax.default_backend()}, {len(devices)} device(s) ({devices[0].device_kind}), "
        f"{jax.process_count()} process(es); workdir {workdir}",
    ])


def run(
    train_and_evaluate: TrainAndEvaluate,
    default_config: str | pathlib.Path,
    name: str,
    argv: Sequence[str] | None = None,
    docstring: str = "",
) -> Any:
    """Parse flags and call `train_and_evaluate(config, workdir)`; a UserError exits with status 2,
    `--help` prints the config keys and exits 0."""
    argv = list(sys.argv if argv is None else argv)
    try:
        if any(argument in HELP_FLAGS for argument in argv[1:]):
            print(help_text(name, _config_argument(argv, str(default_config)), docstring))
            sys.exit(0)
        config, workdir = parse(argv, default_config, name)
        parallel.initialize_distributed()  # before anything asks JAX for its devices
        if jax.process_index() == 0:
            print(_describe_run(config, workdir), flush=True)
        return train_and_evaluate(config, workdir)
    except UserError as error:
        fail(_one_line(error))
