"""The command line shared by every experiment: `--config=<file.py>`, `--config.key=value`, `--workdir`.

Every problem a person can fix (unknown config key, bad value, missing file, unknown name,
indivisible batch, NaN loss) ends the program with one line naming the problem and the fix and
exit status 2, without a traceback.
"""

from __future__ import annotations

import pathlib
import sys
from typing import Any, Callable, Sequence

import ml_collections
from absl import flags
from ml_collections import config_flags

from visionax.errors import UserError

TrainAndEvaluate = Callable[[ml_collections.ConfigDict, str], Any]


def _one_line(error: BaseException) -> str:
    text = str(error).strip().strip('"').strip("'")
    return " ".join(text.split()) or type(error).__name__


def fail(message: str) -> None:
    """Print `error: <message>` to stderr and exit with status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def config_path_from_argv(argv: Sequence[str], default: str) -> str:
    for index, argument in enumerate(argv):
        if argument.startswith("--config="):
            return argument.split("=", 1)[1]
        if argument == "--config" and index + 1 < len(argv):
            return argv[index + 1]
    return default


def parse(argv: Sequence[str], default_config: str | pathlib.Path, name: str):
    """Parse the experiment's flags into `(config, workdir)`; raises UserError on a bad command line."""
    default_config = str(default_config)
    config_file = config_path_from_argv(argv, default_config)
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
            f"unknown config key {key!r}; see the keys in {config_file} (override as --config.<key>=<value>)"
        ) from None
    except flags.Error as error:
        raise UserError(f"{_one_line(error)}; run with --helpfull to list the flags") from None
    except (ValueError, TypeError) as error:
        raise UserError(f"bad config value: {_one_line(error)}") from None
    workdir = flag_values.workdir or str(pathlib.Path("runs") / name)
    return config, workdir


def run(
    train_and_evaluate: TrainAndEvaluate,
    default_config: str | pathlib.Path,
    name: str,
    argv: Sequence[str] | None = None,
) -> Any:
    """Parse flags and call `train_and_evaluate(config, workdir)`; a UserError exits with status 2."""
    try:
        config, workdir = parse(sys.argv if argv is None else argv, default_config, name)
        return train_and_evaluate(config, workdir)
    except UserError as error:
        fail(_one_line(error))
