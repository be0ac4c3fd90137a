"""`python -m experiments.pixelcnn` end to end on the digits with tiny models: the table, results.json
and the PNGs, the test bits/dim against the logits computed directly, the shipped step on 8 devices
against 1, an interrupted run resumed to the uninterrupted parameters, bad input in one line."""

import json

import chex
import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments import pixelcnn
from experiments.configs.pixelcnn import get_config
from tests.experiments.checks import (
    Interrupted,
    assert_command_line_error,
    assert_same_run,
    interrupt_batches,
    run_shipped_steps,
)
from visionax.data.datasets import load_arrays
from visionax.generative import autoregressive
from visionax.generative.likelihood import bits_per_dim, quantize, uniform_bits_per_dim
from visionax.generative.pixelcnn import level_input
from visionax.train import checkpoint
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

COLUMN_KEYS = {"parameters": "parameters", "test bits/dim": "test_bits_per_dim",
               "Fréchet distance": "frechet_distance", "classifier score": "classifier_score",
               "training seconds": "training_seconds", "sampling seconds/image": "sampling_seconds_per_image"}


def tiny_config(digits_dir, **changes):
    """44 steps of batch 64 per model, widths 8 to 16, 20 samples in batches of 10, a 1-epoch classifier."""
    config = get_config()
    config.data.data_dir = digits_dir
    config.epochs = 2
    config.log_every, config.eval_every, config.checkpoint_every = 11, 22, 1000
    config.model_options = ml_collections.ConfigDict({
        "pixelcnn": {"features": 16, "depth": 1, "output_features": 16},
        "gated_pixelcnn": {"features": 8, "depth": 1, "output_features": 16},
        "row_lstm": {"features": 8, "depth": 1, "output_features": 16, "conv_impl": "gemm"}})
    config.num_samples, config.sample_batch_size, config.classifier_epochs = 20, 10, 1
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_dir):
    config = tiny_config(digits_dir)
    workdir = tmp_path_factory.mktemp("pixelcnn")
    return pixelcnn.train_and_evaluate(config, str(workdir)), workdir, config


def test_every_model_learns_and_the_table_is_results_json(run):
    results, workdir, config = run
    assert json.loads((workdir / "results.json").read_text()) == results
    rows = {row["model"]: row for row in results["rows"]}
    assert rows["uniform (log₂ 17)"]["test bits/dim"] == results["uniform_bits_per_dim"] == uniform_bits_per_dim(17)
    assert set(results["models"]) == set(autoregressive.LABELS)
    for name, label in autoregressive.LABELS.items():
        numbers = results["models"][name]
        assert {column: rows[label][column] for column in COLUMN_KEYS} == {
            column: numbers[key] for column, key in COLUMN_KEYS.items()}
        assert numbers["test_bits_per_dim"] < results["uniform_bits_per_dim"] - 0.5, (name, numbers)
        assert numbers["frechet_distance"] > 0 and 1 <= numbers["classifier_score"] <= 10
        assert sum(numbers["class_histogram"]) == config.num_samples and numbers["sampling_seconds_per_image"] > 0
        records = read_metrics(workdir / name)
        train = [record["bits_per_dim"] for record in records if record["split"] == "train"]
        assert len(train) == 4 and train[-1] < train[0] - 0.3, (name, train)
        assert [record["step"] for record in records if record["split"] == "eval"] == [22, 44]
    for png in ("samples.png", "curves.png"):
        assert np.asarray(Image.open(workdir / png).convert("L")).std() > 10


def test_test_bits_per_dim_equal_bits_per_dim_of_the_logits_computed_directly(run, digits_dir):
    results, workdir, config = run
    test_images = load_arrays("digits", "test", data_dir=digits_dir)[0]
    for name in ("gated_pixelcnn", "row_lstm"):
        model = autoregressive.get_model(name, 17, 1, **pixelcnn.model_options(config, name))
        params = checkpoint.load_variables(workdir / name)[0]["params"]
        values = quantize(test_images, 17)
        logits = jax.jit(model.apply)({"params": params}, level_input(values, 17))
        expected = float(bits_per_dim(logits, values))
        assert results["models"][name]["test_bits_per_dim"] == pytest.approx(expected, rel=1e-5)


def test_the_shipped_step_on_8_devices_equals_1(digits_dir):
    config = tiny_config(digits_dir, models="gated_pixelcnn")
    assert_same_run(run_shipped_steps(pixelcnn, config, 8, "shard_map"),
                    run_shipped_steps(pixelcnn, config, 1, "shard_map"))


def test_a_resumed_run_ends_with_the_uninterrupted_parameters(run, digits_dir, tmp_path, monkeypatch, capsys):
    """The PixelCNN stopped before step 30 of 44 (checkpoints every 11 steps) and started again resumes
    from step 22 and ends with the parameters and test bits/dim of the fixture's uninterrupted run."""
    straight, straight_dir, _ = run
    config = tiny_config(digits_dir, models="pixelcnn", checkpoint_every=11,
                         classifier_from=str(straight_dir / "classifier"))
    steps_read = interrupt_batches(monkeypatch, 30)
    with pytest.raises(Interrupted):
        pixelcnn.train_and_evaluate(config, str(tmp_path))
    assert checkpoint.load_variables(tmp_path / "pixelcnn")[1] == 22
    steps_read.clear()
    capsys.readouterr()
    resumed = pixelcnn.train_and_evaluate(config, str(tmp_path))
    assert f"resumed from step 22 ({tmp_path / 'pixelcnn'})" in capsys.readouterr().out
    assert steps_read == list(range(22, 44))
    chex.assert_trees_all_equal(checkpoint.load_variables(tmp_path / "pixelcnn")[0],
                                checkpoint.load_variables(straight_dir / "pixelcnn")[0])
    assert resumed["models"]["pixelcnn"]["test_bits_per_dim"] == straight["models"]["pixelcnn"]["test_bits_per_dim"]


@pytest.mark.parametrize("flags, message", [
    (["--config.models=pixelcnn,pixelsnail"], "unknown model 'pixelsnail' in config.models"),
    (["--config.levels=1"], "levels=1 does not fit 8-bit images"),
    (["--config.levels=300"], "levels=300 does not fit 8-bit images"),
    (["--config.num_samples=360"], "num_samples=360 exceeds the 359 test images"),
    (["--config.model_options.row_lstm.kernel_size=4"], "row_lstm: kernel_size=4 must be an odd integer"),
    (["--config.model_options.pixelcnn.depth=-1"], "pixelcnn: depth=-1 must be >= 0"),
    (["--config.conv_impl=cudnn"], "unknown conv_impl 'cudnn'"),
    (["--config.learning_rate=0"], "learning_rate=0"),
])
def test_bad_input_fails_with_one_line(tmp_path, digits_dir, flags, message, capsys):
    assert_command_line_error(pixelcnn, [f"--config.data.data_dir={digits_dir}", *flags], tmp_path / "run",
                              message, capsys)
