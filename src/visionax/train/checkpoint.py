"""Orbax checkpoints of the train state in `<workdir>/checkpoints`, and the config saved beside them."""

from __future__ import annotations

import json
import pathlib

import jax
import ml_collections
import orbax.checkpoint as ocp

from visionax.errors import UserError
from visionax.train.state import TrainState

CONFIG_FILE = "config.json"


def config_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def claim_workdir(workdir: pathlib.Path, config: ml_collections.ConfigDict) -> None:
    """Write `config.json`, or check that a run already in `workdir` used the same config.

    Resuming with another config would silently mix two runs, so it is a UserError and nothing in
    the workdir is touched.
    """
    path = workdir / CONFIG_FILE
    text = config_json(config)
    if path.exists():
        if path.read_text() != text:
            previous = json.loads(path.read_text())
            current = json.loads(text)
            changed = sorted(_changed_keys(previous, current))
            raise UserError(
                f"workdir {str(workdir)!r} holds a run with another config (changed: {', '.join(changed)}); "
                "pass a new --workdir, or the same config to resume"
            )
        return
    workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _changed_keys(previous: dict, current: dict, prefix: str = "") -> set[str]:
    changed = set()
    for key in previous.keys() | current.keys():
        left, right = previous.get(key), current.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            changed |= _changed_keys(left, right, f"{prefix}{key}.")
        elif left != right:
            changed.add(prefix + key)
    return changed


def manager(workdir: pathlib.Path, *, keep: int, every: int) -> ocp.CheckpointManager:
    """Keeps the last `keep` checkpoints, saving every `every` steps (and when forced)."""
    return ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every, create=True),
    )


def save(checkpoints: ocp.CheckpointManager, state: TrainState, *, force: bool = False) -> bool:
    """Save `state` (without a device axis) at its step; returns whether a save started."""
    return checkpoints.save(int(state.step), args=ocp.args.StandardSave(state.savable()), force=force)


def restore_latest(checkpoints: ocp.CheckpointManager, state: TrainState) -> TrainState:
    """`state` with the fields of the latest checkpoint, or `state` itself when there is none."""
    step = checkpoints.latest_step()
    if step is None:
        return state
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state.savable())
    return state.restored(checkpoints.restore(step, args=ocp.args.StandardRestore(abstract)))
