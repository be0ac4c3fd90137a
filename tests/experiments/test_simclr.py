"""`python -m experiments.simclr` end to end on 8 fake devices with a tiny encoder."""

import json

import chex
import jax
import ml_collections
import numpy as np
import pytest

from experiments import simclr
from experiments.configs import simclr as simclr_config
from visionax import parallel
from visionax.errors import UserError
from visionax.train import setup
from visionax.train.metrics import read_metrics


def tiny(config: ml_collections.ConfigDict, digits_dir: str) -> ml_collections.ConfigDict:
    """The experiment's config with a small CNN instead of the ResNet-18, for test time."""
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
    with pytest.raises(UserError, match=message):
        simclr.train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def run_shipped_steps(experiment, config, devices, impl, steps=2):
    """`steps` steps of the experiment's own model, state and step (built by its `create`) on the
    first `devices` devices, as its training loop runs them."""
    run = setup.setup(config)
    run = setup.Setup(parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]), impl), run.spec, run.batches)
    _, state, step = experiment.create(config, run)
    compiled = run.data_parallel.step(step, donate=False)
    placed, losses = run.data_parallel.put_state(state), []
    for index in range(steps):
        placed, metrics = compiled(placed, run.data_parallel.put_batch(run.batches.host_batch(index)))
        losses.append(float(np.ravel(jax.device_get(run.data_parallel.get_state(metrics))["loss"])[0]))
    return np.array(losses), jax.device_get(run.data_parallel.get_state(placed))


def shipped(config, digits_dir):
    """The shipped config (ResNet-18 CIFAR stem, conv_impl=auto, its optimizer and schedule) at a
    test size: width 4, batch 32 of the 8×8 digits, warmup over the first of 4 epochs' steps."""
    config.model_options.width = 4
    config.batch_size = 32
    config.data.data_dir = digits_dir
    return config


# float32: sharded sums (synchronised BatchNorm, the gathered loss) add in another order than on one device
TOLERANCE = dict(rtol=2e-4, atol=2e-6)


@pytest.fixture(scope="module")
def shipped_one_device(digits_dir):
    config = shipped(simclr_config.get_config(), digits_dir)
    return config, run_shipped_steps(simclr, config, 1, "shard_map")


def assert_same_run(eight, one, tolerance=TOLERANCE):
    (losses_eight, state_eight), (losses_one, state_one) = eight, one
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5)
    assert losses_one[1] != losses_one[0]
    for field in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_close(getattr(state_eight, field), getattr(state_one, field), **tolerance)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_the_shipped_step_on_8_devices_equals_1_device(impl, shipped_one_device):
    config, one = shipped_one_device
    assert (config.model, config.conv_impl, config.optimizer, config.schedule) == (
        "resnet18", "auto", "lars", "warmup_cosine")
    assert_same_run(run_shipped_steps(simclr, config, 8, impl), one)
