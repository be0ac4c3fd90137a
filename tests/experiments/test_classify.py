"""`python -m experiments.classify` end to end: trains, evaluates, writes results.json (the printed
table's numbers), starts from another run's encoder with init_from, and takes the regularisers."""

import json

import pytest

from experiments import classify
from experiments.configs.classify import get_config
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def small(digits_dir, **changes):
    config = get_config()
    config.epochs = 2
    config.batch_size = 64
    config.eval_every = 0
    config.data.data_dir = digits_dir
    config.update_from_flattened_dict(changes)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("classify")
    return classify.train_and_evaluate(small(digits_dir), str(workdir)), workdir


def test_trains_and_writes_the_table_it_prints(trained):
    results, workdir = trained
    assert results["steps"] == 44 and results["test_accuracy"] > 0.8
    assert json.loads((workdir / "results.json").read_text()) == results
    test_row = results["rows"][1]
    assert test_row["split"] == "test" and test_row["accuracy"] == results["test_accuracy"]
    assert test_row["loss"] == results["test_loss"]
    train_records = [record for record in read_metrics(workdir) if record["split"] == "train"]
    assert results["rows"][0]["loss"] == train_records[-1]["loss"]
    assert (workdir / "curves.png").stat().st_size > 0


def test_init_from_starts_from_the_trained_encoder(trained, tmp_path, digits_dir, capsys):
    results, workdir = trained
    # one more epoch from the trained weights learns from a better start than from scratch
    warm = classify.train_and_evaluate(small(digits_dir, epochs=1, init_from=str(workdir)), str(tmp_path / "warm"))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("init_from"))
    assert f"init_from {workdir} (step 44): loaded" in line
    cold = classify.train_and_evaluate(small(digits_dir, epochs=1), str(tmp_path / "cold"))
    first = lambda path: [r for r in read_metrics(path) if r["split"] == "train"][0]["loss"]  # noqa: E731
    assert first(tmp_path / "warm") < 0.5 * first(tmp_path / "cold")
    assert warm["test_accuracy"] > cold["test_accuracy"]


def test_regularisers_from_the_config(tmp_path, digits_dir):
    config = small(digits_dir, epochs=1, **{"augment.crop_padding": 1, "augment.flip_probability": 0.5,
                                             "augment.cutout_size": 2, "augment.mixup_alpha": 0.2})
    results = classify.train_and_evaluate(config, str(tmp_path))
    assert results["steps"] == 22 and results["test_loss"] > 0
