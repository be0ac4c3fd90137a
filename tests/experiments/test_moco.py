"""`python -m experiments.moco` end to end on 8 fake devices with a tiny encoder, and its v1 config."""

import json

import pytest

from experiments import moco
from experiments.configs import moco as moco_config
from experiments.configs import moco_v1
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


def test_moco_v2_learns(tmp_path, digits_dir):
    config = tiny(moco_config.get_config(), digits_dir)
    config.queue_size = 512
    result = moco.train_and_evaluate(config, str(tmp_path))
    # The loss is no progress measure here: it rises while the queue's random start fills with
    # real (harder) keys. The features are.
    assert len(train_losses(tmp_path)) == 66 // config.log_every + 1
    assert result["knn_accuracy"] > result["random_knn_accuracy"]
    assert result["knn_accuracy"] > 0.5
    assert json.loads((tmp_path / "results.json").read_text())["title"].startswith("MoCo (MLP head)")


def test_v1_is_a_config_not_a_preset():
    v1, v2 = moco_v1.get_config(), moco_config.get_config()
    changed = {key for key in v1.to_dict() if v1.to_dict()[key] != v2.to_dict()[key]}
    assert changed == {"head_layers", "temperature", "schedule", "augment"}
    assert (v1.head_layers, v1.temperature, v1.schedule, v1.augment.jitter_probability) == (1, 0.07, "step", 1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"queue_size": 1000}, "queue_size=1000 is not a multiple of the global batch 128"),
        ({"head_layers": 3}, "head_layers=3"),
        ({"key_momentum": 1.5}, "key_momentum=1.5 must be in"),
        # 8 devices: 16 examples each.
        ({"bn_group_size": 6}, "bn_group_size=6 does not divide the per-device batch 16.*=4"),
        ({"bn_group_size": 4}, "model 'small_cnn' has no split BatchNorm"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = tiny(moco_config.get_config(), digits_dir)
    config.update(change)
    assert_user_error(moco, config, tmp_path / "run", message)


@pytest.fixture(scope="module")
def shipped_one_device(digits_dir):
    config = shipped(moco_config.get_config(), digits_dir)
    config.bn_group_size = 4  # the test batch of 32 is 4 per device on 8 devices
    return config, run_shipped_steps(moco, config, 1, "shard_map")


@pytest.mark.parametrize("impl, on_device", [("shard_map", False), ("pmap", True)])
def test_the_shipped_step_on_8_devices_equals_1_device(impl, on_device, shipped_one_device):
    """MoCo v2 as shipped (ResNet-18, conv_impl=auto, SGD with momentum and cosine decay, shuffle BN
    in groups): with groups of 4 examples, one device cut into 8 groups takes the steps of 8 devices."""
    config, one = shipped_one_device
    assert (config.model, config.conv_impl, config.optimizer, config.schedule) == (
        "resnet18", "auto", "momentum", "cosine")
    # One device normalises the 8 groups through split BatchNorm, 8 devices each its own batch: the
    # same formula summed in another order. The float32 gradient of a BatchNorm bias sums ~10³
    # terms, so the parameters agree to ~2e-5 (float64 activations leave the same gap: it is the
    # float32 parameters' rounding), the losses to 1e-5.
    # under pmap the 8 devices gather their batches from the split placed on them (data.on_device)
    assert_same_run(run_shipped_steps(moco, with_on_device(config, on_device), 8, impl), one,
                    tolerance=dict(rtol=2e-4, atol=5e-5))
