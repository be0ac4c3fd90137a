"""`python -m experiments.split_brain` end to end on 8 fake devices with a tiny encoder, its config, bad
settings, and the shipped step on 8 devices against 1."""

import pytest

from experiments import split_brain
from experiments.configs import simclr as simclr_config
from experiments.configs import split_brain as split_brain_config
from tests.experiments.checks import (
    assert_command_line_error,
    assert_representation_table,
    assert_same_run,
    assert_user_error,
    run_shipped_steps,
    shipped,
    tiny,
)
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def test_split_brain_learns_both_predictions_and_ends_with_simclrs_evaluation(tmp_path, digits_dir):
    config = tiny(split_brain_config.get_config(), digits_dir)
    config.epochs = 2
    result = split_brain.train_and_evaluate(config, str(tmp_path))
    records = [record for record in read_metrics(tmp_path) if record["split"] == "train"]
    assert result["steps"] == 22 and records[-1]["step"] == 22
    first, last = records[0], records[-1]
    # measured: a*b* loss 6.4 → 3.4 and per-pixel accuracy 0.001 → 0.44; L* 4.7 → 2.1 and 0.008 → 0.52
    assert last["ab_loss"] < first["ab_loss"] - 1.5 and last["lightness_loss"] < first["lightness_loss"] - 1.5
    assert last["ab_accuracy"] > first["ab_accuracy"] + 0.3
    assert last["lightness_accuracy"] > first["lightness_accuracy"] + 0.3
    assert_representation_table(result, tmp_path, "Split-brain autoencoder on digits: 22 steps, 8 device(s)")
    rows = {row["features"]: row for row in result["rows"]}
    assert rows["learned encoder"]["dimension"] == 32  # two halves of small_cnn (8, 16, 32): 16 + 16


def test_config_uses_two_halves_of_simclrs_digits_encoder_and_its_batch():
    config, simclr = split_brain_config.get_config(), simclr_config.get_config()
    assert (config.model, config.model_options, config.batch_size, config.data) == (
        simclr.model, simclr.model_options, simclr.batch_size, simclr.data)
    assert split_brain.split_brain.half_width(config.model, config.model_options) == {"width": 8}
    assert (config.lightness_bins, config.ab_grid_size, config.ab_range, config.prediction_size) == (
        100, 10.0, 110.0, 8)
    cifar = split_brain_config.get_config("cifar10")
    assert (cifar.model_options.width, cifar.prediction_size, "augment" in cifar) == (64, 8, False)
    assert cifar.data.name == "image_folder"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lightness_bins": 1}, "lightness_bins=1 must be an integer >= 2"),
        ({"ab_grid_size": 7.0}, "is not a whole number of cells of grid_size=7.0"),
        ({"model_options.width": 15}, "model_options.width=15 must be even"),
        ({"prediction_size": 3}, "a 3×3 grid of predictions does not divide the 8×8 images"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0 must be positive"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = split_brain_config.get_config()
    config.data.data_dir = digits_dir
    config.update_from_flattened_dict(change)
    assert_user_error(split_brain, config, tmp_path / "run", message)


def test_a_bad_flag_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert_command_line_error(split_brain, ["--config.lightness_bins=1"], tmp_path / "run",
                              "lightness_bins=1 must be an integer >= 2", capsys)


def test_the_shipped_step_on_8_devices_equals_1_device(digits_dir):
    """The experiment's own networks (two ResNet-18 at width 2, BatchNorm synchronised over the mesh),
    per-example hues and optimizer, under shard_map (pmap runs the same per-device step: rotation's
    test compares both)."""
    config = shipped(split_brain_config.get_config(), digits_dir)
    assert (config.model, config.conv_impl, config.optimizer, config.schedule) == (
        "resnet18", "auto", "adam", "warmup_cosine")
    assert_same_run(run_shipped_steps(split_brain, config, 8, "shard_map"),
                    run_shipped_steps(split_brain, config, 1, "shard_map"))
