"""`python -m experiments.optimizers`: every optimizer on the same network, plus L-BFGS and Newton."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import optimizers
from experiments.configs.optimizers import get_config
from visionax import optim


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    config = get_config()
    config.epochs = 4
    config.lbfgs_steps = 60
    config.newton_steps = 6
    workdir = tmp_path_factory.mktemp("optimizers")
    return optimizers.train_and_evaluate(config, str(workdir)), workdir


def test_every_optimizer_trains_the_network(run):
    summary, _ = run
    results = summary["results"]
    for name in optim.OPTIMIZERS:
        row = results[name]
        # From ln 10 ≈ 2.30 at initialisation to well below in 4 epochs.
        assert row["final_loss"] < 0.3, (name, row)
        assert row["test_accuracy"] >= 0.9, (name, row)
        assert row["polyak_test_accuracy"] >= 0.85, (name, row)


def test_lbfgs_and_newton_agree_on_the_full_batch_minimum(run):
    """Two different second-order methods reach the same convex minimum (1e-5 relative)."""
    results = run[0]["results"]
    lbfgs = results["lbfgs (softmax, full batch)"]
    newton = results["newton (softmax, full batch)"]
    assert lbfgs["final_loss"] == pytest.approx(newton["final_loss"], rel=1e-5)
    assert lbfgs["train_accuracy"] == pytest.approx(newton["train_accuracy"], abs=2e-3)
    assert newton["iterations"] == 6 and lbfgs["iterations"] <= 60
    assert newton["train_accuracy"] > 0.97


def test_writes_one_png_and_the_summary(run):
    summary, workdir = run
    assert json.loads((workdir / "summary.json").read_text()) == summary
    image = np.asarray(Image.open(workdir / "loss_curves.png"))
    assert image.shape[1] > 2 * image.shape[0]  # two panels side by side
    assert image.std() > 10
    assert list(workdir.glob("*.png")) == [workdir / "loss_curves.png"]


def test_prints_the_table(tmp_path, capsys):
    config = get_config()
    config.epochs = 1
    config.optimizers = "sgd,adam"
    config.lbfgs_steps = 3
    config.newton_steps = 1
    optimizers.train_and_evaluate(config, str(tmp_path))
    lines = capsys.readouterr().out.splitlines()
    assert "final loss" in lines[0] and "test acc" in lines[0] and "Polyak test" in lines[0]
    assert [line.split()[0] for line in lines[1:5]] == ["sgd", "adam", "lbfgs", "newton"]


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.optimizers=sgd,adamw", "unknown optimizer 'adamw'"),
        ("--config.learning_rates.adam=-0.1", "learning_rate=-0.1 must be positive"),
        ("--config.polyak_decay=1.0", "polyak_decay must be in"),
        ("--config.batch_size=5000", "batch_size 5000 exceeds"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, flag, message):
    workdir = tmp_path / "run"
    process = subprocess.run(
        [sys.executable, "-m", "experiments.optimizers", flag, "--config.epochs=1", f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=300,
    )
    assert process.returncode == 2, process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], process.stderr
    assert not workdir.exists()
