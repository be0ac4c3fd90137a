"""`python -m experiments.linear_classifier`: SVM and softmax linear classifiers on the embedded digits."""

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from experiments import linear_classifier
from experiments.configs.linear_classifier import get_config


def test_trains_both_classifiers_and_plots_class_weights(tmp_path, capsys):
    config = get_config()
    config.epochs = 15
    summary = linear_classifier.train_and_evaluate(config, str(tmp_path))
    results = summary["results"]
    assert set(results) == {"svm", "softmax"}
    for name, row in results.items():
        assert row["test_accuracy"] >= 0.9, (name, row)
        assert row["train_accuracy"] >= 0.9, (name, row)
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    image = np.asarray(Image.open(tmp_path / "weights.png"))
    assert image.ndim == 3 and image.shape[1] > 2 * image.shape[0]  # a wide grid: 10 classes per row
    assert image.std() > 10  # not blank
    assert (tmp_path / "loss.png").is_file()
    output = capsys.readouterr().out
    assert "svm" in output and "softmax" in output and "test acc" in output


def test_sgd_decreases_the_loss():
    config = get_config()
    config.epochs = 8
    spec = linear_classifier.data.DatasetSpec.from_config(config.data)
    x, y = linear_classifier.load_split(spec, "train")
    x = x.reshape(len(x), -1) - x.reshape(len(x), -1).mean(0)
    import jax

    for name in ("svm", "softmax"):
        _, history = linear_classifier.train_linear(name, config, x, y, 10, jax.random.key(0))
        assert history[-1] < 0.5 * history[0], (name, history)


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.learning_rate=-0.1", "learning_rate must be positive"),
        ("--config.losses=svm,hinge", "unknown loss 'hinge'"),
        ("--config.batch_size=0", "batch_size must be"),
        ("--config.no_such_key=1", "unknown config key"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, flag, message):
    workdir = tmp_path / "run"
    process = subprocess.run(
        [sys.executable, "-m", "experiments.linear_classifier", flag, f"--workdir={workdir}"],
        capture_output=True, text=True, timeout=120,
    )
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], process.stderr
    assert not workdir.exists()
