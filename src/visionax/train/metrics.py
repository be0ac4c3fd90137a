"""Metrics to `<workdir>/metrics.jsonl` and TensorBoard event files, and a console progress bar."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Mapping

import tqdm
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"


def read_metrics(workdir: str | pathlib.Path) -> list[dict]:
    """Every record of `metrics.jsonl`: `{"step", "split", <name>: value, ...}`."""
    path = pathlib.Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def last_record(workdir: str | pathlib.Path, split: str) -> dict:
    """The newest record of `split` ("train" or "eval") in metrics.jsonl (empty when there is none)."""
    records = [record for record in read_metrics(workdir) if record["split"] == split]
    return records[-1] if records else {}


class MetricWriter:
    """Appends records to metrics.jsonl and TensorBoard; on resume drops records after `start_step`."""

    def __init__(self, workdir: pathlib.Path, *, start_step: int, total_steps: int, enabled: bool = True):
        self.path = workdir / METRICS_FILE
        self.enabled = enabled
        if enabled:
            kept = [record for record in read_metrics(workdir) if record["step"] <= start_step]
            self.path.write_text("".join(json.dumps(record) + "\n" for record in kept))
            self.tensorboard = SummaryWriter(str(workdir / "tensorboard"))
        self.progress = tqdm.tqdm(
            total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
            disable=not enabled, mininterval=1.0,
        )

    def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "split": split, **{name: float(value) for name, value in values.items()}}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")
        for name, value in values.items():
            if math.isfinite(float(value)):
                self.tensorboard.add_scalar(f"{split}/{name}", float(value), step)
        self.progress.set_postfix(
            {f"{split}_{name}": f"{float(value):.4g}" for name, value in values.items()}, refresh=False
        )

    def advance(self, steps: int) -> None:
        self.progress.update(steps)

    def close(self) -> None:
        self.progress.close()
        if self.enabled:
            self.tensorboard.close()
