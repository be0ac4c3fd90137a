"""`python -m experiments.context_encoder` end to end on 8 fake devices with a tiny encoder, its config,
bad settings, and the shipped step on 8 devices against 1."""

import chex
import pytest

from experiments import context_encoder
from experiments.configs import context_encoder as context_encoder_config
from experiments.configs import simclr as simclr_config
from tests.experiments.checks import (
    TOLERANCE,
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


def test_context_encoder_learns_to_inpaint_and_ends_with_simclrs_evaluation(tmp_path, digits_dir):
    """The shipped random regions and discriminator: the masked pixels' squared error falls, the
    discriminator learns beside it, the run ends with the representation table."""
    config = tiny(context_encoder_config.get_config(), digits_dir)
    config.epochs = 3
    result = context_encoder.train_and_evaluate(config, str(tmp_path))
    records = [record for record in read_metrics(tmp_path) if record["split"] == "train"]
    assert result["steps"] == 33 and [record["step"] for record in records][-1] == 33
    reconstruction = [record["reconstruction_loss"] for record in records]
    # the squared error over the 16 masked pixels: measured 2.31 over the first 5 steps, 1.68 at the end
    assert reconstruction[-1] < 0.8 * reconstruction[0]
    for record in records:
        assert record["loss"] == pytest.approx(record["reconstruction_loss"] + 0.001 * record["adversarial_loss"])
    # from log 4 = 1.386 (D = ½ everywhere): measured 1.382 over the first 5 steps, 1.378 at the end
    assert records[-1]["discriminator_loss"] < records[0]["discriminator_loss"] < 1.3863
    assert records[-1]["d_real"] > records[-1]["d_fake"]
    assert_representation_table(result, tmp_path, "Context encoder inpainting on digits: 33 steps, 8 device(s)")


def test_config_uses_simclrs_digits_encoder_and_batch():
    config, simclr = context_encoder_config.get_config(), simclr_config.get_config()
    assert (config.model, config.model_options, config.batch_size, config.data) == (
        simclr.model, simclr.model_options, simclr.batch_size, simclr.data)
    assert (config.mask, config.fill, config.adversarial_weight) == ("random", "mean", 0.001)
    cifar10 = context_encoder_config.get_config("cifar10")
    assert (cifar10.model_options.width, cifar10.decoder_widths) == (64, (256, 128, 64))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"mask": "corner"}, "unknown mask 'corner'; choose one of center, random"),
        ({"adversarial_weight": -1.0}, "adversarial_weight=-1.0 must be >= 0"),
        ({"discriminator_learning_rate": 0.0}, "discriminator_learning_rate=0.0 must be positive"),
        ({"decoder_widths": (64, 32, 16, 8)}, "decoder_widths has 4 widths.*8×8 images need sides .* multiples of 16"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = tiny(context_encoder_config.get_config(), digits_dir)
    config.update_from_flattened_dict(change)
    assert_user_error(context_encoder, config, tmp_path / "run", message)


def test_a_bad_flag_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert_command_line_error(context_encoder, ["--config.fill=noise"], tmp_path / "run",
                              "unknown fill 'noise'; choose one of mean, zero", capsys)


def test_the_shipped_step_on_8_devices_equals_1_device(digits_dir):
    """The experiment's own model (ResNet-18 and the DCGAN decoder, BatchNorm synchronised over the
    mesh), discriminator, regions and optimizers; both players' parameters compared."""
    config = shipped(context_encoder_config.get_config(), digits_dir)
    assert (config.model, config.conv_impl, config.optimizer, config.adversarial_weight) == (
        "resnet18", "auto", "adam", 0.001)
    eight, one = (run_shipped_steps(context_encoder, config, devices, "shard_map") for devices in (8, 1))
    assert_same_run(eight, one)
    for field in ("discriminator_params", "discriminator_opt_state"):
        chex.assert_trees_all_close(getattr(eight[1], field), getattr(one[1], field), **TOLERANCE)
