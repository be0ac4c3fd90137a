"""`python -m experiments.linear_classifier`: SVM and softmax linear classifiers on the embedded digits."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments import linear_classifier
from experiments.configs.linear_classifier import get_config
from tests.experiments.checks import assert_command_line_error
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_dir):
    config = get_config()
    config.epochs = 15
    config.data.data_dir = digits_dir
    workdir = tmp_path_factory.mktemp("linear")
    return linear_classifier.train_and_evaluate(config, str(workdir)), workdir


def test_trains_both_classifiers_and_plots_class_weights(run):
    results, workdir = run
    rows = {row["classifier"]: row for row in results["rows"]}
    assert set(rows) == {"svm", "softmax"}
    for name, row in rows.items():
        assert row["test accuracy"] >= 0.9, (name, row)
        assert row["train accuracy"] >= 0.9, (name, row)
    assert json.loads((workdir / "results.json").read_text()) == results
    image = np.asarray(Image.open(workdir / "weights.png"))
    assert image.ndim == 3 and image.shape[1] > 2 * image.shape[0]  # a wide grid: 10 classes per row
    assert image.std() > 10  # not blank
    assert (workdir / "loss.png").is_file()
    for name in rows:  # each classifier is an ordinary training run with its own workdir
        assert json.loads((workdir / name / "config.json").read_text())["loss"] == name
        assert (workdir / name / "checkpoints").is_dir()


def test_sgd_decreases_the_loss(run):
    _, workdir = run
    for name in ("svm", "softmax"):
        losses = [record["loss"] for record in read_metrics(workdir / name) if record["split"] == "train"]
        assert len(losses) == 15 and losses[-1] < 0.5 * losses[0], (name, losses)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.learning_rate=-0.1", "learning_rate=-0.1 must be positive"),
        ("--config.losses=svm,hinge", "unknown loss 'hinge'"),
        ("--config.batch_size=0", "batch_size=0 is not divisible"),
        ("--config.no_such_key=1", "unknown config key"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, flag, message, digits_dir, capsys):
    assert_command_line_error(linear_classifier, [flag, f"--config.data.data_dir={digits_dir}"], tmp_path / "run", message,
                              capsys)
