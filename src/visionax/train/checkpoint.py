"""Orbax checkpoints of the train state in `<workdir>/checkpoints`, and the config saved beside them.

A workdir belongs to one config (`claim_workdir`): resuming with another config is a one-line error,
except for the keys that cannot change the result (`RESUMABLE_KEYS`: how often to log, evaluate and
save, how many checkpoints to keep, whether to write embeddings, whether the data is held in memory),
and to one run at a time
(`WorkdirLock`). Faults a person can meet are one-line errors or one warning, never a lost
checkpoint: a save that fails (a full disk) keeps the previous checkpoints; an unreadable newest
checkpoint (a truncated copy) is set aside as `<step>.unreadable` and the previous one resumed; a
save killed half-way leaves only orbax's temporary directory, which is never read.
`load_variables(workdir)` gives the params and batch statistics of a finished or running
experiment without building its optimizer. `best_manager` keeps the best checkpoint by a metric
(early stopping, `visionax.train.early_stopping`) in `<workdir>/best_checkpoint`.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import pathlib
import sys
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from visionax.errors import UserError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT_DIR = "best_checkpoint"
LOCK_FILE = ".lock"
UNREADABLE_SUFFIX = ".unreadable"
# Keys whose change cannot change a run's parameters: a resume may change them.
RESUMABLE_KEYS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "save_embeddings",
                  "data.in_memory_mb", "data.on_device", "data.workers", "data.prefetch")

__all__ = ["CONFIG_FILE", "RESUMABLE_KEYS", "config_json", "claim_workdir", "WorkdirLock", "manager", "best_manager",
           "save", "wait", "restore_latest", "load_variables"]


def config_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def changed_keys(previous: dict, current: dict, prefix: str = "") -> set[str]:
    """The dotted keys whose values differ between two nested config dicts."""
    changed = set()
    for key in previous.keys() | current.keys():
        left, right = previous.get(key), current.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            changed |= changed_keys(left, right, f"{prefix}{key}.")
        elif left != right:
            changed.add(prefix + key)
    return changed


def claim_workdir(workdir: str | pathlib.Path, config: ml_collections.ConfigDict, *, write: bool = True) -> None:
    """Write `config.json`, or check that a run already in `workdir` used the same config.

    Only `RESUMABLE_KEYS` may differ (config.json is then rewritten with the new values); any other
    change would silently mix two runs, so it is a UserError and nothing in the workdir is touched.
    Every process checks; only the first writes (and none with `write=False`: a check that touches
    nothing).
    """
    workdir = pathlib.Path(workdir)
    writer = write and jax.process_index() == 0
    path = workdir / CONFIG_FILE
    text = config_json(config)
    if path.exists():
        previous = json.loads(path.read_text())
        changed = changed_keys(previous, json.loads(text))
        refused = sorted(key for key in changed if key not in RESUMABLE_KEYS)
        if refused:
            raise UserError(
                f"workdir {str(workdir)!r} holds a run with another config (changed: {', '.join(refused)}); "
                "pass a new --workdir, or the same config to resume"
            )
        if changed and writer:
            path.write_text(text)
        return
    if writer:
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


class WorkdirLock:
    """An exclusive lock on `<workdir>/.lock` for the duration of a run (first process only): a
    second run started on the same workdir stops with one line instead of mixing checkpoints. The
    operating system releases it when the process ends, even by kill -9."""

    def __init__(self, workdir: str | pathlib.Path):
        self.path = pathlib.Path(workdir) / LOCK_FILE
        self.file = None

    def __enter__(self) -> "WorkdirLock":
        if jax.process_index() != 0:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            self.file = None
            raise UserError(f"workdir {str(self.path.parent)!r} is in use by a run still going ({holder}); "
                            "wait for it to finish, or pass another --workdir") from None
        self.file.truncate(0)
        self.file.write(f"pid {os.getpid()}\n")
        self.file.flush()
        return self

    def __exit__(self, *exc_info) -> None:
        if self.file is not None:
            fcntl.flock(self.file, fcntl.LOCK_UN)
            self.file.close()
            self.file = None


def manager(workdir: str | pathlib.Path, *, keep: int, every: int) -> ocp.CheckpointManager:
    """Keeps the last `keep` checkpoints, saving every `every` steps (and when forced)."""
    if keep < 1 or every < 1:
        raise UserError(f"keep_checkpoints={keep} and checkpoint_every={every} must be >= 1; "
                        "pass e.g. --config.keep_checkpoints=2 --config.checkpoint_every=100")
    return ocp.CheckpointManager(
        (pathlib.Path(workdir) / CHECKPOINT_DIR).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every, create=True),
    )


def best_manager(workdir: str | pathlib.Path, *, metric: str, mode: str) -> ocp.CheckpointManager:
    """Keeps the one checkpoint in `<workdir>/best_checkpoint` whose saved `metrics[metric]` is the
    best (`mode` "max": the highest; "min": the lowest): orbax's `best_fn` and `best_mode`."""
    return ocp.CheckpointManager(
        (pathlib.Path(workdir) / BEST_CHECKPOINT_DIR).absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, best_fn=lambda metrics: metrics[metric], best_mode=mode,
                                             create=True),
    )


def _os_error(error: BaseException) -> OSError | None:
    """The OSError behind `error` (orbax may wrap what its writing thread raised), if any."""
    while error is not None:
        if isinstance(error, OSError):
            return error
        error = error.__cause__ or error.__context__
    return None


def _write_failed(checkpoints: ocp.CheckpointManager, step: int, error: OSError) -> UserError:
    reason = os.strerror(error.errno) if error.errno else str(error)
    fix = "free disk space" if error.errno == errno.ENOSPC else "check the folder"
    steps = checkpoints.all_steps()
    kept = f"the last complete checkpoint (step {max(steps)}) is kept" if steps else "no checkpoint was complete"
    return UserError(f"could not write the checkpoint of step {step} to {checkpoints.directory} ({reason}); "
                     f"{fix} and rerun the same command to resume; {kept}")


def save(checkpoints: ocp.CheckpointManager, state, *, force: bool = False, metrics: dict | None = None) -> bool:
    """Save `state` (without a device axis) at its step, with `metrics` for a `best_manager`; returns
    whether a save started. A failed write is a UserError naming the cause; the checkpoints already
    written stay intact."""
    try:
        return checkpoints.save(int(state.step), args=ocp.args.StandardSave(state.savable()), force=force,
                                metrics=metrics)
    except Exception as error:  # noqa: BLE001 - only OSErrors become user errors
        cause = _os_error(error)
        if cause is None:
            raise
        raise _write_failed(checkpoints, int(state.step), cause) from None


def wait(checkpoints: ocp.CheckpointManager) -> None:
    """Wait for the asynchronous saves; a failed write is a UserError as in `save`."""
    try:
        checkpoints.wait_until_finished()
    except Exception as error:  # noqa: BLE001 - only OSErrors become user errors
        cause = _os_error(error)
        if cause is None:
            raise
        raise _write_failed(checkpoints, -1 if checkpoints.latest_step() is None else checkpoints.latest_step(),
                            cause) from None


def _readable_steps(checkpoints: ocp.CheckpointManager) -> list[int]:
    """The finished checkpoints' steps, newest first (orbax ignores unfinished temporary ones)."""
    return sorted(checkpoints.all_steps(), reverse=True)


def _set_aside(checkpoints: ocp.CheckpointManager, step: int) -> pathlib.Path:
    """Rename checkpoint `step` to `<step>.unreadable[-n]` (kept for inspection, never read again)."""
    directory = pathlib.Path(checkpoints.directory)
    target = directory / f"{step}{UNREADABLE_SUFFIX}"
    count = 1
    while target.exists():
        count += 1
        target = directory / f"{step}{UNREADABLE_SUFFIX}-{count}"
    if jax.process_index() == 0:
        (directory / str(step)).rename(target)
    return target


def restore_latest(checkpoints: ocp.CheckpointManager, state):
    """`state` with the fields of the newest readable checkpoint, or `state` itself when there is
    none. An unreadable checkpoint is set aside (`<step>.unreadable`) with one warning naming its
    step, and the previous one is tried; when none is readable, a UserError."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.savable())
    unreadable = []
    for step in _readable_steps(checkpoints):
        try:
            restored = checkpoints.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as error:  # noqa: BLE001 - a truncated or corrupted checkpoint fails in many ways
            unreadable.append((step, type(error).__name__, _set_aside(checkpoints, step)))
            continue
        if unreadable:
            checkpoints.reload()
            bad = ", ".join(f"step {bad_step} ({kind}, now {path.name})" for bad_step, kind, path in unreadable)
            if jax.process_index() == 0:
                print(f"warning: unreadable checkpoint {bad} in {checkpoints.directory}; resuming from step {step}",
                      file=sys.stderr)
        return state.restored(restored)
    if unreadable:
        raise UserError(f"no readable checkpoint in {checkpoints.directory} (every one was set aside as "
                        f"<step>{UNREADABLE_SUFFIX}); pass a new --workdir to start again")
    return state


def load_variables(workdir: str | pathlib.Path) -> tuple[dict[str, Any], int]:
    """`({"params", "batch_stats"}, step)` of the newest readable checkpoint in `workdir`, restored
    as saved (NumPy arrays), without building the model or its optimizer."""
    directory = (pathlib.Path(workdir) / CHECKPOINT_DIR).absolute()
    if not directory.is_dir():
        raise UserError(f"{str(workdir)!r} holds no checkpoints ({directory} is missing); "
                        "pass the --workdir of a run that has trained")
    checkpoints = ocp.CheckpointManager(directory)
    try:
        for step in _readable_steps(checkpoints):
            try:
                saved = checkpoints.restore(step, args=ocp.args.StandardRestore())
            except Exception:  # noqa: BLE001 - fall back to the previous checkpoint
                continue
            return {"params": saved["params"], "batch_stats": saved.get("batch_stats", {})}, step
    finally:
        checkpoints.close()
    raise UserError(f"no readable checkpoint in {directory}; pass the --workdir of a run that has trained")
