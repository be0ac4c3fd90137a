"""Results for people: a plain-text table and PNG plots of the curves in metrics.jsonl."""

from __future__ import annotations

import pathlib
from typing import Sequence

from visionax.train.metrics import read_metrics


def table(headers: Sequence[str], rows: Sequence[Sequence], title: str = "") -> str:
    """A fixed-width text table; floats printed with 4 significant digits."""
    cells = [[f"{cell:.4g}" if isinstance(cell, float) else str(cell) for cell in row] for row in rows]
    widths = [max(len(str(header)), *(len(row[index]) for row in cells)) for index, header in enumerate(headers)]
    line = "  ".join("-" * width for width in widths)
    text = [title] if title else []
    text += ["  ".join(str(header).ljust(width) for header, width in zip(headers, widths)), line]
    text += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in cells]
    return "\n".join(text)


def plot_curves(workdir: str | pathlib.Path, panels: Sequence[tuple[str, str]], filename: str) -> pathlib.Path:
    """One panel per `(split, metric)` of metrics.jsonl against the step, saved as `workdir/filename`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), squeeze=False)
    for axis, (split, metric) in zip(axes[0], panels):
        points = [(record["step"], record[metric]) for record in records if record["split"] == split and metric in record]
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="." if len(points) < 30 else None)
        axis.set_xlabel("step")
        axis.set_title(f"{split} {metric}")
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = pathlib.Path(workdir) / filename
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
