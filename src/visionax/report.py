"""Results for people and for programs: the final table of an experiment printed and saved as
`results.json` under the same column names, and the PNG plots every experiment shares.

An experiment ends with `report.finish(workdir, table, plots=..., summary=...)`: the table is
printed, `results.json` gets `{"title", "columns", "rows": [{column: value}], **summary}`, and the
same dictionary is returned by `train_and_evaluate`. Plots are drawn through `figure` / `save`, the
one place that sets up matplotlib (the Agg backend: no display needed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Mapping, Sequence

import jax
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from visionax.train.metrics import read_metrics  # noqa: E402

RESULTS_FILE = "results.json"

__all__ = ["RESULTS_FILE", "Table", "finish", "figure", "save", "image_grid", "show_images", "plot_curves",
           "plot_runs", "plot_embedding", "read_results", "finished_results"]


@dataclasses.dataclass(frozen=True)
class Table:
    """A final table: `columns` names and `rows` of cells (str, int or float)."""

    title: str
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def text(self) -> str:
        """Fixed-width text; floats with 4 significant digits, None (no value) as —."""
        cells = [["—" if cell is None else f"{cell:.4g}" if isinstance(cell, float) else str(cell)
                  for cell in row] for row in self.rows]
        widths = [max(len(str(column)), *(len(row[index]) for row in cells))
                  for index, column in enumerate(self.columns)]
        lines = [self.title] if self.title else []
        lines.append("  ".join(str(column).ljust(width) for column, width in zip(self.columns, widths)))
        lines.append("  ".join("-" * width for width in widths))
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in cells]
        return "\n".join(lines)

    def records(self) -> list[dict[str, Any]]:
        """One `{column: value}` per row, the machine-readable table."""
        return [dict(zip(self.columns, map(_plain, row))) for row in self.rows]


def _plain(value: Any) -> Any:
    """NumPy/JAX scalars as Python numbers (JSON); non-finite floats stay floats (JSON NaN)."""
    if isinstance(value, (np.generic, jax.Array)):
        return value.item()
    return value


def finish(
    workdir: str | pathlib.Path,
    table: Table,
    *,
    plots: Sequence[pathlib.Path] = (),
    summary: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Print `table` and the plot paths, write `results.json` and return its content.

    Only the first process prints and writes; every process returns the same dictionary.
    """
    results = {"title": table.title, "columns": list(table.columns), "rows": table.records(),
               **{key: _plain(value) for key, value in (summary or {}).items()}}
    if jax.process_index() == 0:
        path = pathlib.Path(workdir)
        path.mkdir(parents=True, exist_ok=True)
        (path / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
        print(table.text())
        if plots:
            print("plots: " + " ".join(str(plot) for plot in plots))
        print(f"results: {path / RESULTS_FILE}")
    return results


def read_results(workdir: str | pathlib.Path) -> dict[str, Any]:
    """The `results.json` of a finished experiment."""
    return json.loads((pathlib.Path(workdir) / RESULTS_FILE).read_text())


def finished_results(workdir: str | pathlib.Path) -> dict[str, Any] | None:
    """The `results.json` of the experiment in `workdir` when it finished, None when it has not."""
    return read_results(workdir) if (pathlib.Path(workdir) / RESULTS_FILE).exists() else None


def figure(rows: int = 1, columns: int = 1, *, panel_size: tuple[float, float] = (4.5, 3.5)):
    """A matplotlib figure and its `[rows, columns]` array of axes."""
    return plt.subplots(rows, columns, figsize=(panel_size[0] * columns, panel_size[1] * rows),
                        squeeze=False)


def save(fig, path: str | pathlib.Path, *, title: str = "", dpi: int = 110) -> pathlib.Path:
    """Lay out, title, write `fig` as a PNG at `path` (first process only), close it; returns the path."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if jax.process_index() == 0:
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return pathlib.Path(path)


def image_grid(images: np.ndarray, columns: int) -> np.ndarray:
    """uint8 images `[n, h, w, c]` tiled row by row, `columns` a row, with one-pixel white gaps, into
    one image `[rows·(h + 1) − 1, columns·(w + 1) − 1, c]` (a short last row is left white)."""
    count, height, width, channels = np.shape(images)
    rows = -(-count // columns)
    grid = np.full((rows * (height + 1) - 1, columns * (width + 1) - 1, channels), 255, np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[row * (height + 1):row * (height + 1) + height, column * (width + 1):column * (width + 1) + width] = image
    return grid


def show_images(axis, images: np.ndarray, columns: int, title: str = "",
                row_labels: Sequence[str] = ()) -> None:
    """`image_grid(images, columns)` drawn on a matplotlib `axis` (grey levels for one channel), no
    ticks but a label beside each grid row when `row_labels` are given."""
    grid = image_grid(images, columns)
    if grid.shape[-1] == 1:
        axis.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255)
    else:
        axis.imshow(grid)
    axis.set_xticks([])
    row_height = np.shape(images)[1] + 1
    axis.set_yticks([row_height * row + row_height / 2 - 1 for row in range(len(row_labels))])
    axis.set_yticklabels(row_labels, fontsize=8)
    if title:
        axis.set_title(title, fontsize=9)


def plot_curves(workdir: str | pathlib.Path, panels: Sequence[tuple[str, str]], filename: str = "curves.png",
                *, log_scale: bool = False) -> pathlib.Path:
    """One panel per `(split, metric)` of `workdir/metrics.jsonl` against the step."""
    records = read_metrics(workdir)
    fig, axes = figure(1, len(panels))
    for axis, (split, metric) in zip(axes[0], panels):
        points = [(record["step"], record[metric]) for record in records
                  if record["split"] == split and metric in record and math.isfinite(record[metric])]
        if points:
            steps, values = zip(*points)
            (axis.semilogy if log_scale else axis.plot)(steps, values, marker="." if len(points) < 30 else None)
        axis.set_xlabel("step")
        axis.set_title(f"{split} {metric}")
        axis.grid(alpha=0.3)
    return save(fig, pathlib.Path(workdir) / filename)


def plot_runs(runs: Mapping[str, str | pathlib.Path], panels: Sequence[tuple[str, str]],
              path: str | pathlib.Path, *, log_scale: bool = False, title: str = "") -> pathlib.Path:
    """One panel per `(split, metric)`, one line per run (`{label: workdir}`) against the step."""
    fig, axes = figure(1, len(panels), panel_size=(5.5, 4.0))
    styles = ("-", "--", ":", "-.")  # tell apart the curves that coincide
    for axis, (split, metric) in zip(axes[0], panels):
        for index, (label, workdir) in enumerate(runs.items()):
            points = [(record["step"], record[metric]) for record in read_metrics(workdir)
                      if record["split"] == split and metric in record and math.isfinite(record[metric])]
            if points:
                steps, values = zip(*points)
                (axis.semilogy if log_scale else axis.plot)(steps, values, styles[index % 4], label=label)
        axis.set_xlabel("step")
        axis.set_title(f"{split} {metric}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return save(fig, path, title=title)


def plot_embedding(features: np.ndarray, labels: np.ndarray, path: str | pathlib.Path,
                   title: str = "test embeddings, PCA") -> pathlib.Path:
    """A 2-D PCA of `features` `[n, dim]` coloured by `labels` `[n]`: the projection of the centred
    features on their two leading right singular vectors."""
    centred = np.asarray(features, np.float64) - np.mean(features, axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    fig, axes = figure(panel_size=(5, 4.5))
    scatter = axes[0, 0].scatter(projected[:, 0], projected[:, 1], c=labels, cmap="tab10", s=8)
    axes[0, 0].legend(*scatter.legend_elements(), title="class", fontsize=7, loc="best")
    axes[0, 0].set_title(title)
    return save(fig, path)
