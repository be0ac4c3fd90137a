"""`python -m experiments.optimizers`: every optimizer on the same network, plus L-BFGS and Newton."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments import optimizers
from experiments.configs.optimizers import get_config
from tests.experiments.checks import assert_command_line_error
from visionax import optim
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_dir):
    config = get_config()
    config.epochs = 4
    config.lbfgs_steps = 60
    config.newton_steps = 6
    config.data.data_dir = digits_dir
    workdir = tmp_path_factory.mktemp("optimizers")
    return optimizers.train_and_evaluate(config, str(workdir)), workdir


def rows(results):
    return {row["optimizer"].split(" ")[0]: row for row in results["rows"]}


def test_every_optimizer_trains_the_network(run):
    results, workdir = run
    table = rows(results)
    for name in optim.OPTIMIZERS:
        row = table[name]
        # From ln 10 ≈ 2.30 at initialisation to well below in 4 epochs.
        assert row["final loss"] < 0.3, (name, row)
        assert row["test accuracy"] >= 0.9, (name, row)
        assert row["Polyak test accuracy"] >= 0.85, (name, row)
        # each optimizer is an ordinary training run in its own workdir, with the same batches
        assert json.loads((workdir / name / "config.json").read_text())["optimizer"] == name
        assert len([r for r in read_metrics(workdir / name) if r["split"] == "train"]) == 4


def test_lbfgs_and_newton_agree_on_the_full_batch_minimum(run):
    """Two different second-order methods reach the same convex minimum (1e-5 relative)."""
    table = rows(run[0])
    lbfgs, newton = table["lbfgs"], table["newton"]
    assert lbfgs["final loss"] == pytest.approx(newton["final loss"], rel=1e-5)
    assert lbfgs["train accuracy"] == pytest.approx(newton["train accuracy"], abs=2e-3)
    assert "6 iterations" in newton["optimizer"]
    assert newton["train accuracy"] > 0.97


def test_writes_one_png_and_the_results(run, capsys):
    results, workdir = run
    assert json.loads((workdir / "results.json").read_text()) == results
    image = np.asarray(Image.open(workdir / "loss_curves.png"))
    assert image.shape[1] > 2 * image.shape[0]  # two panels side by side
    assert image.std() > 10
    assert list(workdir.glob("*.png")) == [workdir / "loss_curves.png"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.optimizers=sgd,adamw", "unknown optimizer 'adamw'"),
        ("--config.learning_rates.adam=-0.1", "learning_rate=-0.1 must be positive"),
        ("--config.polyak_decay=1.0", "polyak_decay=1.0 must be in"),
        ("--config.batch_size=5000", "batch_size=5000 exceeds"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, flag, message, digits_dir, capsys):
    assert_command_line_error(optimizers, [flag, "--config.epochs=1", f"--config.data.data_dir={digits_dir}"], tmp_path / "run", message,
                              capsys)
