"""Early stopping (lecture 8): stop training when the validation metric has stopped improving, and
end with the parameters of its best evaluation.

`config.early_stopping = {metric, mode, patience, min_delta}` (patience 0: off). An evaluation
improves when its value v beats the best value b so far by more than min_delta (mode "max":
v > b + min_delta; "min": v < b − min_delta; the first finite value always improves); after
`patience` evaluations in a row that do not improve, training stops. The state of the best
evaluation is kept by orbax in `<workdir>/best_checkpoint` (a manager whose `best_fn` reads the
metric, `best_mode` the mode), besides the latest ones in `<workdir>/checkpoints`.

Resume after kill -9: the patience counter and the best value are a function of the sequence of
evaluations (`progress`), so the sequence is what is stored: `<workdir>/early_stopping.json`,
replaced atomically (a temporary file, then `os.replace`) after each evaluation, once the best
checkpoint of that evaluation is complete. A checkpoint does not hold it because the state pytree
of every experiment would need a field for it; the file is kept consistent with the checkpoints
instead: the loop evaluates before it saves (so a checkpoint of step s comes after the evaluation
of step s is stored), and a resumed run keeps the evaluations up to the step it resumes from and
drops the best checkpoints after it (both are redone with the same parameters, as the steps are).
A run that had stopped stays stopped when started again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
from typing import Mapping, Sequence

import jax
import ml_collections

from visionax.errors import UserError
from visionax.train import checkpoint

HISTORY_FILE = "early_stopping.json"
MODES = ("min", "max")

__all__ = ["HISTORY_FILE", "Rule", "Progress", "advance", "progress", "read_evaluations", "EarlyStopping"]


@dataclasses.dataclass(frozen=True)
class Rule:
    """Stop after `patience` evaluations of `metric` in a row that do not improve on the best by
    more than `min_delta`, in `mode` ("max": higher is better; "min": lower is better)."""

    metric: str
    mode: str = "max"
    patience: int = 0
    min_delta: float = 0.0

    def __post_init__(self):
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise UserError(f"early_stopping.patience={self.patience!r} must be an integer >= 0 (0: off); "
                            "pass e.g. --config.early_stopping.patience=5")
        if self.mode not in MODES:
            raise UserError(f"early_stopping.mode={self.mode!r} must be max (higher is better) or min; "
                            "pass e.g. --config.early_stopping.mode=max")
        if not self.min_delta >= 0:
            raise UserError(f"early_stopping.min_delta={self.min_delta} must be >= 0; "
                            "pass e.g. --config.early_stopping.min_delta=0.001")

    def improves(self, value: float, best: float | None) -> bool:
        """Whether `value` improves on `best` (None: no evaluation yet) by more than min_delta."""
        if not math.isfinite(value):
            return False
        if best is None:
            return True
        return value > best + self.min_delta if self.mode == "max" else value < best - self.min_delta

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, metrics: Sequence[str]) -> "Rule | None":
        """The rule of `config.early_stopping`, None when its patience is 0; `metrics` are the names
        the run's evaluation returns, read every `config.eval_every` steps."""
        settings = config.early_stopping
        rule = cls(settings.metric, settings.mode, settings.patience, settings.min_delta)
        if not rule.patience:
            return None
        if rule.metric not in metrics:
            raise UserError(f"unknown early_stopping.metric {rule.metric!r}; choose one of {', '.join(metrics)}")
        if config.eval_every < 1:
            raise UserError(f"early stopping reads the evaluations every eval_every steps, not {config.eval_every}; "
                            "pass e.g. --config.eval_every=20")
        return rule


@dataclasses.dataclass(frozen=True)
class Progress:
    """After some evaluations: the best value and its step (None before any), the evaluations since
    the last improvement (the patience counter) and whether training stops."""

    best: float | None = None
    best_step: int | None = None
    waited: int = 0
    stopped: bool = False


def advance(rule: Rule, current: Progress, step: int, value: float) -> Progress:
    """`current` after the evaluation of `value` at `step`."""
    if rule.improves(value, current.best):
        return Progress(best=value, best_step=step)
    waited = current.waited + 1
    return dataclasses.replace(current, waited=waited, stopped=waited >= rule.patience)


def progress(rule: Rule, evaluations: Sequence[tuple[int, float]]) -> Progress:
    """The progress after `evaluations` `[(step, value), ...]`, in order."""
    return functools.reduce(lambda current, evaluation: advance(rule, current, *evaluation), evaluations, Progress())


def read_evaluations(workdir: str | pathlib.Path) -> list[tuple[int, float]]:
    """The evaluations `[(step, value), ...]` stored in `<workdir>/early_stopping.json` ([] without it)."""
    path = pathlib.Path(workdir) / HISTORY_FILE
    if not path.exists():
        return []
    return [(int(step), float(value)) for step, value in json.loads(path.read_text())["evaluations"]]


class EarlyStopping:
    """The rule applied to one run in `workdir` resumed from `start_step`: its stored evaluations
    (`progress`), its best checkpoint, and the best state at the end."""

    def __init__(self, rule: Rule, workdir: str | pathlib.Path, start_step: int):
        self.rule = rule
        self.path = pathlib.Path(workdir) / HISTORY_FILE
        self.evaluations = [(step, value) for step, value in read_evaluations(workdir) if step <= start_step]
        self.best_checkpoints = checkpoint.best_manager(workdir, metric=rule.metric, mode=rule.mode)
        for step in self.best_checkpoints.all_steps():
            if step > start_step:
                self.best_checkpoints.delete(step)
        self._write()
        self.progress = progress(rule, self.evaluations)

    def _write(self) -> None:
        if jax.process_index() != 0:
            return
        text = json.dumps({"metric": self.rule.metric, "mode": self.rule.mode,
                           "evaluations": [[step, value] for step, value in self.evaluations]})
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(text)
        os.replace(temporary, self.path)

    def record(self, step: int, metrics: Mapping[str, float], state) -> Progress:
        """Take the evaluation `metrics` of `state` (no device axis) at `step`: save `state` as the
        best when it improves, store the evaluation; returns the progress. An evaluation already
        stored at `step` (a finished run started again) is kept as it was."""
        if self.rule.metric not in metrics:
            raise UserError(f"early_stopping.metric {self.rule.metric!r} is not among the evaluation's metrics "
                            f"({', '.join(metrics)}); pass one of them")
        if any(stored == step for stored, _ in self.evaluations):
            return self.progress
        value = float(metrics[self.rule.metric])
        new = advance(self.rule, self.progress, step, value)
        if new.best_step == step:
            checkpoint.save(self.best_checkpoints, state, force=True, metrics={self.rule.metric: value})
            checkpoint.wait(self.best_checkpoints)
        self.evaluations.append((step, value))
        self._write()
        self.progress = new
        return new

    def best_state(self, state):
        """`state` with the fields of the best evaluation's checkpoint (`state` itself when no
        evaluation had a finite value)."""
        if self.best_checkpoints.latest_step() is None:
            return state
        return checkpoint.restore_latest(self.best_checkpoints, state)

    def close(self) -> None:
        self.best_checkpoints.close()
