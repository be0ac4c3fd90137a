"""`python -m experiments.video_colorization` end to end at a tiny size on 8 fake devices, the shipped
step on 8 devices against 1, and bad input stopping with one line."""

import json

import jax
import numpy as np
import pytest

from experiments import video_colorization
from experiments.configs import video_colorization as video_colorization_config
from tests.experiments.checks import (
    assert_command_line_error,
    assert_same_run,
    assert_user_error,
    train_losses,
)
from visionax import parallel
from visionax.data.video import VideoSettings, moving_objects
from visionax.ssl.pretext import video_colorization as colorization

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def tiny_config():
    config = video_colorization_config.get_config()
    config.data.update({"num_train": 48, "num_test": 6, "frames": 4, "height": 16, "width": 16, "objects": 2,
                        "min_size": 4, "max_size": 6, "max_speed": 1})
    config.widths, config.dilations, config.feature_dim = (8, 8), (1, 2), 8
    config.conv_impl = "xla"
    config.batch_size = 16
    config.epochs = 8
    config.learning_rate = 1e-2
    config.log_every = 1
    config.eval_every = 0
    config.checkpoint_every = 1000
    config.track_temperatures = (1.0, 0.3)
    config.pixel_temperatures = (0.001, 0.01)
    config.figure_videos = 2
    return config


def identity_iou(config):
    """The identity baseline's mean IoU recomputed in NumPy from freshly drawn test videos."""
    masks = moving_objects(config.data.num_test, VideoSettings.from_config(config.data), seed=config.seed,
                           split="test")["masks"]
    scores = []
    for video in masks:
        for mask in video[1:]:
            for k in range(1, config.data.objects + 1):
                union = np.sum((video[0] == k) | (mask == k))
                if union:
                    scores.append(np.sum((video[0] == k) & (mask == k)) / union)
    return np.mean(scores)


def grey_pixel_iou(config, temperature):
    """The nearest-grey-pixel baseline's mean IoU at `temperature`, video by video through the library."""
    videos = moving_objects(config.data.num_test, VideoSettings.from_config(config.data), seed=config.seed,
                            split="test")
    predicted = []
    for frames, masks in zip(videos["frames"], videos["masks"]):
        reference, target = colorization.grey_pixel_features(frames, config.stride)  # [T, n, 2] each
        predicted.append(colorization.propagate_masks(reference[:-1], target[1:], masks[0], stride=config.stride,
                                                      num_labels=config.data.objects + 1, temperature=temperature))
    return colorization.mean_iou(np.stack(predicted), videos["masks"][:, 1:], config.data.objects)


def test_colourisation_learns_and_reports_tracking_against_the_baselines(tmp_path):
    config = tiny_config()
    result = video_colorization.train_and_evaluate(config, str(tmp_path))
    assert result == json.loads((tmp_path / "results.json").read_text())
    assert result["steps"] == 24
    losses = train_losses(tmp_path)  # tracking takes a few hundred steps (the default run); the loss falls sooner
    assert len(losses) == 24 and np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.05
    methods = [row["method"] for row in result["rows"]]
    assert methods[0] == f"colourisation (learned CNN, τ={result['track_temperature']:g})"
    assert methods[1].startswith("same CNN, random init (τ=")
    assert methods[2:] == [f"nearest grey pixel (τ={result['pixel_temperature']:g})", "identity (frame 0 copied)"]
    assert result["track_temperature"] in (1.0, 0.3) and result["pixel_temperature"] in (0.001, 0.01)
    assert result["identity_iou"] == pytest.approx(identity_iou(config), rel=1e-12)
    pixel_ious = {temperature: grey_pixel_iou(config, temperature) for temperature in config.pixel_temperatures}
    assert result["pixel_iou"] == pytest.approx(max(pixel_ious.values()), rel=1e-12)
    assert pixel_ious[result["pixel_temperature"]] == max(pixel_ious.values()) > min(pixel_ious.values())
    scores = [row["mean IoU"] for row in result["rows"]]
    assert scores == [result[key] for key in ("tracking_iou", "random_iou", "pixel_iou", "identity_iou")]
    assert all(0 <= score <= 1 for score in scores)
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "tracking.png").stat().st_size > 0


def shipped_steps(config, devices, impl):
    """Two steps of the experiment's own encoder, state and step on the first `devices` devices."""
    run = video_colorization.video_run(config)
    run = video_colorization.VideoRun(parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]), impl),
                                      run.video, run.batches, run.test)
    _, state, step = video_colorization.create(config, run)
    compiled = run.data_parallel.step(step, donate=False)
    placed, losses = run.data_parallel.put_state(state), []
    for index in range(2):
        placed, metrics = compiled(placed, run.data_parallel.put_batch(run.batches.host_batch(index)))
        losses.append(float(jax.device_get(run.data_parallel.get_state(metrics))["loss"]))
    return np.array(losses), jax.device_get(run.data_parallel.get_state(placed))


@pytest.fixture(scope="module")
def shipped_one_device():
    """The shipped encoder, optimizer and convolutions on 16 small videos a batch, on 1 device."""
    config = video_colorization_config.get_config()
    config.data.update({"num_train": 32, "num_test": 8, "frames": 3, "height": 16, "width": 16})
    config.batch_size = 16
    return config, shipped_steps(config, 1, "shard_map")


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_the_shipped_step_on_8_devices_equals_1_device(impl, shipped_one_device):
    config, one = shipped_one_device
    assert (config.widths, config.feature_dim, config.conv_impl) == ((32,) * 4, 64, "auto")
    assert_same_run(shipped_steps(config, 8, impl), one)


@pytest.mark.parametrize("change, message", [
    ({"stride": 3}, "stride=3 must be 1 or 2"),
    ({"data.name": "digits"}, "data.name='digits': this experiment trains on the synthetic videos only"),
    ({"data.frames": 1}, "frames=1 must be >= 2"),
    ({"data.height": 15}, "frames of 15×16 do not split into 2×2 blocks"),
    ({"pixel_temperatures": (0.0,)}, "pixel_temperatures=\\(0.0,\\) must be positive"),
    ({"batch_size": 12}, "batch_size=12 is not divisible by the 8 devices"),
    ({"data.num_train": 8}, "batch_size=16 exceeds the 8 training examples"),
])
def test_bad_settings_are_user_errors(change, message, tmp_path):
    config = tiny_config()
    config.update_from_flattened_dict(change)
    assert_user_error(video_colorization, config, tmp_path / "run", message)


def test_a_bad_flag_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert_command_line_error(video_colorization, ["--config.temperature=-1"], tmp_path / "run",
                              "temperature=-1.0 must be positive", capsys)
