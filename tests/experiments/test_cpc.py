"""`python -m experiments.cpc` end to end on 8 fake devices with a tiny patch encoder."""

import json

import numpy as np
import pytest

from experiments import cpc, self_supervised
from experiments.configs import cpc as cpc_config
from tests.experiments.checks import assert_same_run, assert_user_error, run_shipped_steps, tiny, train_losses
from visionax.data.preprocess import model_input
from visionax.ssl.cpc import grid_size, patch_grid
from visionax.train import checkpoint, setup
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def test_cpc_learns_to_predict_the_rows_below(tmp_path, digits_dir):
    config = tiny(cpc_config.get_config(), digits_dir)
    config.save_embeddings = True
    result = cpc.train_and_evaluate(config, str(tmp_path))
    losses = train_losses(tmp_path)
    accuracies = [record["accuracy"] for record in read_metrics(tmp_path) if record["split"] == "train"]
    assert result["steps"] == 66
    assert losses[-1] < losses[0] - 0.5
    assert accuracies[-1] > accuracies[0] + 0.05
    results = json.loads((tmp_path / "results.json").read_text())
    assert results == result and results["title"].startswith("CPC on digits")
    rows = {row["features"]: row for row in results["rows"]}
    assert set(rows) == {"raw pixels", "random encoder", "learned encoder"}
    assert rows["learned encoder"]["dimension"] == 32  # the patch encoder's features, averaged over the grid
    # ten classes: chance is 0.1. After these 66 steps the features do not yet beat the random
    # encoder's (0.68 vs 0.71 kNN); the shipped 150-step run does (0.79 vs 0.76, probe 0.94 vs 0.89).
    assert result["knn_accuracy"] > 0.3
    # the evaluated features are the trained patch encoder's, averaged over the 3 × 3 grid of 4×4 patches
    variables, step = checkpoint.load_variables(tmp_path)
    assert step == 66
    test_images = setup.setup(config).test.images
    patches = patch_grid(model_input(test_images), 4, 2).reshape(-1, 4, 4, 1)
    encoder_variables = {name: variables[name]["encoder"] for name in ("params", "batch_stats")}
    per_patch = self_supervised.encoder(config).apply(encoder_variables, patches)
    expected = np.asarray(per_patch).reshape(len(test_images), 9, -1).mean(axis=1)
    np.testing.assert_allclose(np.load(tmp_path / "embeddings.npz")["test"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"prediction_steps": 3}, "3 patch rows cannot predict 3 rows ahead"),
        ({"patch_size": 10}, "patch_size=10 exceeds the 8×8 images"),
        ({"context": "lstm"}, "context='lstm'"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = tiny(cpc_config.get_config(), digits_dir)
    config.update_from_flattened_dict(change)
    assert_user_error(cpc, config, tmp_path / "run", message)


def test_the_shipped_step_on_8_devices_equals_1_device(digits_dir):
    config = cpc_config.get_config()
    config.batch_size = 32
    config.data.data_dir = digits_dir
    assert (config.model, config.context, config.optimizer) == ("small_cnn", "conv", "adam")
    assert_same_run(run_shipped_steps(cpc, config, 8, "shard_map"), run_shipped_steps(cpc, config, 1, "shard_map"))


def test_the_cifar10_variant_cuts_32_pixel_images_into_the_digits_3_by_3_grid():
    config, digits = cpc_config.get_config("cifar10"), cpc_config.get_config()
    assert config.data.name == "image_folder" and config.data.image_size == 32
    assert grid_size(32, config.patch_size, config.stride) == grid_size(8, digits.patch_size, digits.stride) == 3
    assert config.stride * 2 == config.patch_size  # 50% overlap, as on the digits
    assert config.model == "resnet18" and "augment" not in config and "head_hidden_dim" not in config
    with pytest.raises(ValueError, match="unknown variant 'imagenet' of cpc.py"):
        cpc_config.get_config("imagenet")
