"""`python -m experiments.simclr` end to end on 8 fake devices with a tiny encoder."""

import json

import numpy as np
import pytest

from experiments import simclr
from experiments.configs import simclr as simclr_config
from tests.experiments.checks import (
    assert_same_run,
    assert_user_error,
    run_shipped_steps,
    shipped,
    tiny,
    train_losses,
    with_on_device,
)


pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def test_simclr_learns_features_better_than_its_random_start(tmp_path, digits_dir):
    config = tiny(simclr_config.get_config(), digits_dir)
    config.save_embeddings = True
    result = simclr.train_and_evaluate(config, str(tmp_path))
    losses = train_losses(tmp_path)
    assert result["steps"] == 66
    assert losses[-1] < losses[0] - 0.3
    assert result["knn_accuracy"] > result["random_knn_accuracy"]
    assert result["knn_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "embedding.png").stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["temperature"] == config.temperature
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == result
    rows = {row["features"]: row for row in results["rows"]}
    assert set(rows) == {"raw pixels", "random encoder", "learned encoder"}
    assert rows["learned encoder"]["kNN accuracy"] == result["knn_accuracy"]
    embeddings = np.load(tmp_path / "embeddings.npz")
    assert embeddings["train"].shape == (len(embeddings["train_labels"]), 32)
    assert embeddings["test"].shape == (len(embeddings["test_labels"]), 32)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"temperature": 0.0}, "temperature=0.0 must be positive"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0 must be positive"),
        ({"schedule": "linear"}, "unknown schedule 'linear'; choose one of"),
        ({"augment.jitter_probability": 1.5}, "augment.jitter_probability=1.5 is not a probability"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = tiny(simclr_config.get_config(), digits_dir)
    config.update_from_flattened_dict(change)
    assert_user_error(simclr, config, tmp_path / "run", message)


@pytest.fixture(scope="module")
def shipped_one_device(digits_dir):
    config = shipped(simclr_config.get_config(), digits_dir)
    return config, run_shipped_steps(simclr, config, 1, "shard_map")


@pytest.mark.parametrize("impl, on_device", [("shard_map", False), ("pmap", True)])
def test_the_shipped_step_on_8_devices_equals_1_device(impl, on_device, shipped_one_device):
    config, one = shipped_one_device
    assert (config.model, config.conv_impl, config.optimizer, config.schedule) == (
        "resnet18", "auto", "lars", "warmup_cosine")
    # under pmap the 8 devices gather their batches from the split placed on them (data.on_device)
    assert_same_run(run_shipped_steps(simclr, with_on_device(config, on_device), 8, impl), one)
