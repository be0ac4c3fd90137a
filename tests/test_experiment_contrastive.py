"""The SimCLR and MoCo experiments end to end on 8 fake devices with a tiny encoder."""

import json

import ml_collections
import pytest

from experiments import moco, simclr
from experiments.configs import moco as moco_config
from experiments.configs import simclr as simclr_config
from visionax.errors import UserError
from visionax.train.metrics import read_metrics


def tiny(config: ml_collections.ConfigDict, digits_dir: str) -> ml_collections.ConfigDict:
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict({"widths": (8, 16, 32)})
    config.batch_size = 128
    config.epochs = 6
    config.eval_every = 0
    config.checkpoint_every = 1000
    config.conv_impl = "xla"
    config.data.data_dir = digits_dir
    return config


def train_losses(workdir) -> list[float]:
    return [record["loss"] for record in read_metrics(workdir) if record["split"] == "train"]


def test_simclr_learns_features_better_than_its_random_start(tmp_path, digits_dir):
    config = tiny(simclr_config.get_config(), digits_dir)
    result = simclr.train_and_evaluate(config, str(tmp_path))
    losses = train_losses(tmp_path)
    assert result["steps"] == 66
    assert losses[-1] < losses[0] - 0.3
    assert result["knn_accuracy"] > result["random_knn_accuracy"]
    assert result["knn_accuracy"] > 0.5  # ten classes: chance is 0.1
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "embedding.png").stat().st_size > 0
    assert json.loads((tmp_path / "config.json").read_text())["temperature"] == config.temperature


def test_moco_v2_learns(tmp_path, digits_dir):
    config = tiny(moco_config.get_config(), digits_dir)
    config.queue_size = 512
    result = moco.train_and_evaluate(config, str(tmp_path))
    # The loss is no progress measure here: it rises while the queue's random start fills with
    # real (harder) keys. The features are.
    assert len(train_losses(tmp_path)) == 66 // config.log_every + 1
    assert result["knn_accuracy"] > result["random_knn_accuracy"]
    assert result["knn_accuracy"] > 0.5


@pytest.mark.parametrize(
    "experiment, config_module, change, message",
    [
        (moco, moco_config, {"queue_size": 1000}, "queue_size=1000 is not a multiple of the global batch 128"),
        (moco, moco_config, {"version": "v3"}, "unknown MoCo version 'v3'"),
        # 8 devices: 16 examples each.
        (moco, moco_config, {"bn_group_size": 6}, "bn_group_size=6 does not divide the per-device batch 16.*=4"),
        (moco, moco_config, {"bn_group_size": 4}, "model 'small_cnn' has no split BatchNorm"),
        (simclr, simclr_config, {"temperature": 0.0}, "temperature=0.0 must be positive"),
        (simclr, simclr_config, {"learning_rate": -1.0}, "learning_rate=-1.0 must be positive"),
    ],
)
def test_bad_settings_are_user_errors(experiment, config_module, change, message, tmp_path, digits_dir):
    config = tiny(config_module.get_config(), digits_dir)
    config.update(change)
    with pytest.raises(UserError, match=message):
        experiment.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
