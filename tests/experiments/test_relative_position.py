"""`python -m experiments.relative_position` end to end on 8 fake devices with a tiny encoder, its
config, and the shipped step on 8 devices against 1."""


import pytest

from experiments import relative_position
from experiments.configs import relative_position as relative_position_config
from experiments.configs import rotation as rotation_config
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


def test_relative_position_learns_the_neighbours_place_and_ends_with_rotations_evaluation(tmp_path, digits_dir):
    config = tiny(relative_position_config.get_config(), digits_dir)
    config.epochs = 3
    result = relative_position.train_and_evaluate(config, str(tmp_path))
    records = [record for record in read_metrics(tmp_path) if record["split"] == "train"]
    accuracies = [record["position_accuracy"] for record in records]
    assert result["steps"] == 33 and [record["step"] for record in records][-1] == 33
    # eight positions: chance is 0.125
    assert accuracies[0] < 0.25 and accuracies[-1] > accuracies[0] + 0.1, accuracies
    assert records[-1]["loss"] < records[0]["loss"] - 0.2
    assert_representation_table(result, tmp_path, "Relative patch position on digits: 33 steps, 8 device(s)")


def test_config_uses_rotations_encoder_batch_and_optimizer_with_a_grid_that_fills_the_digits():
    config, rotation = relative_position_config.get_config(), rotation_config.get_config()
    assert (config.model, config.model_options, config.batch_size, config.data, config.optimizer,
            config.learning_rate) == (rotation.model, rotation.model_options, rotation.batch_size, rotation.data,
                                      rotation.optimizer, rotation.learning_rate)
    assert 3 * config.patch_size + 2 * config.gap + 3 * config.jitter == 8
    assert (config.gap, config.head_layers, config.colour_dropping) == (1, 2, True)


def test_the_cifar10_variant_fits_32_pixel_images_with_gap_jitter_and_colour_dropping():
    config = relative_position_config.get_config("cifar10")
    assert config.data.name == "image_folder" and config.data.image_size == 32
    assert 3 * config.patch_size + 2 * config.gap + 3 * config.jitter <= 32
    assert config.gap > 0 and config.jitter > 0 and config.colour_dropping
    with pytest.raises(ValueError, match="unknown variant"):
        relative_position_config.get_config("imagenet")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"patch_size": 3}, "= 11 pixels, more than the 8×8 images: patch_size <= 2 fits"),
        ({"gap": -1}, "gap=-1 and jitter=0 >= 0"),
        ({"head_layers": 0}, "head_layers=0 and head_hidden_dim=128 must be >= 1"),
        ({"learning_rate": -1.0}, "learning_rate=-1.0 must be positive"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = tiny(relative_position_config.get_config(), digits_dir)
    config.update_from_flattened_dict(change)
    assert_user_error(relative_position, config, tmp_path / "run", message)


@pytest.mark.parametrize("flag, message", [
    ("--config.head_layers=0", "head_layers=0 and head_hidden_dim=128 must be >= 1"),
    ("--config.jitter=1", "= 11 pixels, more than the 8×8 images: patch_size <= 1 fits"),
])
def test_a_bad_flag_is_one_line_and_exit_status_2(flag, message, tmp_path, capsys):
    assert_command_line_error(relative_position, [flag], tmp_path / "run", message, capsys)


@pytest.fixture(scope="module")
def shipped_one_device(digits_dir):
    config = shipped(relative_position_config.get_config(), digits_dir)
    return config, run_shipped_steps(relative_position, config, 1, "shard_map")


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_the_shipped_step_on_8_devices_equals_1_device(impl, shipped_one_device):
    """The experiment's own model (ResNet-18, BatchNorm synchronised over the mesh), pairs and optimizer."""
    config, one = shipped_one_device
    assert (config.model, config.conv_impl, config.optimizer, config.schedule) == (
        "resnet18", "auto", "nesterov", "cosine")
    assert_same_run(run_shipped_steps(relative_position, config, 8, impl), one)
