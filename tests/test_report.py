"""The report: the printed table and results.json hold the same numbers under the same names; the
common plots are written as PNGs."""

import json

import numpy as np
from PIL import Image

from visionax import report
from visionax.train.metrics import MetricWriter


def test_table_text_and_results_json_agree(tmp_path, capsys):
    table = report.Table("a title", ["name", "count", "accuracy", "missing"],
                         [["a", 3, 0.123456, None], ["bb", 10, np.float32(0.5), 1.0]])
    results = report.finish(tmp_path, table, summary={"steps": np.int32(7)})
    assert json.loads((tmp_path / "results.json").read_text()) == results == {
        "title": "a title", "columns": ["name", "count", "accuracy", "missing"],
        "rows": [{"name": "a", "count": 3, "accuracy": 0.123456, "missing": None},
                 {"name": "bb", "count": 10, "accuracy": 0.5, "missing": 1.0}],
        "steps": 7}
    assert report.read_results(tmp_path) == results
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "a title"
    assert lines[1].split() == ["name", "count", "accuracy", "missing"]
    assert lines[3].split() == ["a", "3", "0.1235", "—"] and lines[4].split() == ["bb", "10", "0.5", "1"]


def test_curves_runs_and_embedding_plots_are_drawn(tmp_path):
    for name, scale in (("a", 1.0), ("b", 2.0)):
        (tmp_path / name).mkdir()
        writer = MetricWriter(tmp_path / name, start_step=0, total_steps=5)
        for step in range(1, 6):
            writer.write(step, "train", {"loss": scale / step})
        writer.close()
    paths = [report.plot_curves(tmp_path / "a", [("train", "loss")]),
             report.plot_runs({"a": tmp_path / "a", "b": tmp_path / "b"}, [("train", "loss")], tmp_path / "runs.png"),
             report.plot_embedding(np.random.default_rng(0).normal(size=(30, 5)), np.arange(30) % 3,
                                   tmp_path / "embedding.png")]
    for path in paths:
        image = np.asarray(Image.open(path))
        assert image.ndim == 3 and image.std() > 5  # drawn, not blank


def test_image_grid_places_each_image_row_by_row_between_white_gaps():
    images = (np.arange(5, dtype=np.uint8)[:, None, None, None] * 40 + np.arange(6, dtype=np.uint8).reshape(1, 2, 3, 1))
    grid = report.image_grid(images, columns=3)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1, 1) and grid.dtype == np.uint8
    for index, image in enumerate(images):
        row, column = divmod(index, 3)
        np.testing.assert_array_equal(grid[row * 3:row * 3 + 2, column * 4:column * 4 + 3], image)
    assert (grid[2] == 255).all() and (grid[:, 3] == 255).all() and (grid[:, 7] == 255).all()  # the gaps
    assert (grid[3:, 8:] == 255).all()  # the missing sixth image
