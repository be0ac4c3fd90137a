"""Colourising video to learn tracking (Vondrick et al. 2018): `python -m experiments.video_colorization`.

Synthetic videos (`visionax.data.video`: striped, nearly isoluminant coloured digits and shapes
bouncing over a textured background) are shown to a CNN in grey; the colours of each frame are
predicted by attention to the previous frame's colours (`visionax.ssl.pretext.video_colorization`),
with no labels. Evaluation on the test videos: frame 0's object masks carried frame to frame by the
same attention, mean IoU over objects and frames 1…T−1 against the same CNN at its random
initialisation, the nearest grey pixel (the same propagation on the lightness itself) and the
identity (the first mask copied); every propagation at its best temperature of a small grid on these
videos (`track_temperatures`, `pixel_temperatures`). Writes `results.json`, `curves.png` (loss and
tracking IoU) and `tracking.png` (frames, true masks and each method's propagated masks).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import ml_collections
import numpy as np

from experiments import self_supervised
from visionax import cli, parallel, report
from visionax.data.pipeline import ArraySource, Batches
from visionax.data.video import VideoSettings, moving_objects
from visionax.errors import UserError
from visionax.ssl.pretext import video_colorization as colorization
from visionax.train import loop
from visionax.train.precision import compute_dtype

NAME = "video_colorization"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
EVALUATION_CHUNK = 16  # test videos propagated at once


@dataclasses.dataclass(frozen=True)
class VideoRun:
    """The mesh, the training videos as `batches` (`{"image": uint8 [B, T, H, W, 3], "label"}`, labels
    unused) and the test videos (`moving_objects`' arrays)."""

    data_parallel: parallel.DataParallel
    video: VideoSettings
    batches: Batches
    test: dict


def video_run(config: ml_collections.ConfigDict) -> VideoRun:
    """The mesh of `config.parallel` and the videos of `config.data` (UserError on bad input)."""
    video = VideoSettings.from_config(config.data)
    parallel.initialize_distributed()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), config.parallel)
    parallel.check_batch_size(config.batch_size, data_parallel.device_count)
    train = moving_objects(config.data.num_train, video, seed=config.seed, split="train")
    test = moving_objects(config.data.num_test, video, seed=config.seed, split="test")
    source = ArraySource(train["frames"], np.zeros(config.data.num_train, np.int32))
    return VideoRun(data_parallel, video, Batches(source, config.batch_size, config.seed), test)


def create(config: ml_collections.ConfigDict, run: VideoRun):
    """The frame encoder, its step-0 state (the config's optimizer) and the per-device step."""
    settings = colorization.ColorizationSettings.from_config(config)
    settings.check_frame_size(run.video.height, run.video.width)
    model = colorization.frame_encoder(settings, conv_impl=config.conv_impl, dtype=compute_dtype(config.dtype))
    state = self_supervised.create_state(config, run, model, input_shape=(run.video.height, run.video.width, 1))
    return model, state, functools.partial(colorization.train_step, settings=settings)


def check_config(config: ml_collections.ConfigDict) -> None:
    """Every value read before training starts, so a bad one stops before anything is written."""
    if config.data.name != "moving_objects":
        raise UserError(f"data.name={config.data.name!r}: this experiment trains on the synthetic videos only; "
                        "pass --config.data.name=moving_objects (or leave it out)")
    settings = colorization.ColorizationSettings.from_config(config)
    video = VideoSettings.from_config(config.data)
    settings.check_frame_size(video.height, video.width)
    for key, value in (("data.num_test", config.data.num_test), ("epochs", config.epochs),
                       ("figure_videos", config.figure_videos)):
        if value < 1:
            raise UserError(f"{key}={value} must be >= 1; pass e.g. --config.{key}=4")
    for key in ("track_temperatures", "pixel_temperatures"):
        if not config[key] or min(config[key]) <= 0:
            raise UserError(f"{key}={tuple(config[key])} must be positive values; pass e.g. "
                            f"--config.{key}='(0.001, 0.01)'")


@functools.partial(jax.jit, static_argnames=("num_labels", "stride"))
def _propagate(reference, target, masks, temperature, *, num_labels: int, stride: int) -> jax.Array:
    """int32 `[k, T − 1, H, W]`: frame 0's masks of k videos (`masks` `[k, T, H, W]`) carried frame to
    frame with the reference and target features `[k, T, n, d]` at `temperature`."""
    return jax.vmap(lambda earlier, later, mask: colorization.propagate_masks(
        earlier, later, mask, num_labels=num_labels, temperature=temperature, stride=stride)
    )(reference[:, :-1], target[:, 1:], masks[:, 0])


def track_test_videos(features_of, run: VideoRun, stride: int, temperatures) -> dict[float, np.ndarray]:
    """`{τ: int32 [N, T − 1, H, W]}`: the test videos' frame-0 masks carried frame to frame at each
    temperature, with the (reference, target) features `[k, T, n, d]` that `features_of(frames)`
    gives for a chunk of videos `[k, T, H, W, 3]`."""
    tracks = {temperature: [] for temperature in temperatures}
    for start in range(0, len(run.test["frames"]), EVALUATION_CHUNK):
        chunk = slice(start, start + EVALUATION_CHUNK)
        reference, target = features_of(run.test["frames"][chunk])
        for temperature, predicted in tracks.items():
            predicted.append(np.asarray(_propagate(reference, target, run.test["masks"][chunk], temperature,
                                                   num_labels=run.video.objects + 1, stride=stride)))
    return {temperature: np.concatenate(predicted) for temperature, predicted in tracks.items()}


def encoder_features(model, settings: colorization.ColorizationSettings):
    """`features_of(variables)(frames)` for `track_test_videos`: the encoder's features, the same
    for reference and target frames."""
    compiled = jax.jit(functools.partial(colorization.frame_features, model.apply, settings=settings))

    def features_of(variables):
        def features(frames):
            features = compiled(variables, frames)
            return features, features

        return features

    return features_of


def best_tracks(tracks: dict[float, np.ndarray], run: VideoRun) -> tuple[float, np.ndarray]:
    """(τ, masks) of the temperature of `tracks` (`track_test_videos`) with the highest mean IoU."""
    scores = {temperature: colorization.mean_iou(predicted, run.test["masks"][:, 1:], run.video.objects)
              for temperature, predicted in tracks.items()}
    best = max(scores, key=scores.get)
    return best, tracks[best]


def tracking_monitor(run: VideoRun, features_of, settings: colorization.ColorizationSettings):
    """The loop's evaluation: mean tracking IoU of the test videos through the current encoder at
    the training temperature."""

    def evaluate(state, step):
        tracks = track_test_videos(features_of(state.variables), run, settings.stride, [settings.temperature])
        return {"tracking_iou": colorization.mean_iou(tracks[settings.temperature], run.test["masks"][:, 1:],
                                                      run.video.objects)}

    return evaluate


def _iou_row(method: str, predicted: np.ndarray, run: VideoRun) -> list:
    """[method, mean IoU, mean IoU at frame 1, mean IoU at frame T − 1]."""
    ious = colorization.object_ious(predicted, run.test["masks"][:, 1:], run.video.objects)  # [N, T − 1, K]
    return [method, float(np.nanmean(ious)), float(np.nanmean(ious[:, 0])), float(np.nanmean(ious[:, -1]))]


def plot_tracks(path: pathlib.Path, run: VideoRun, tracks: dict[str, np.ndarray], count: int) -> pathlib.Path:
    """`count` test videos, one panel each: the frames, the true masks and the masks of every method
    (`{short name: masks [N, T − 1, H, W]}`; frame 0: the given mask), objects in fixed colours."""
    palette = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                        [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)
    frames, masks = run.test["frames"], run.test["masks"]
    fig, axes = report.figure(count, 1, panel_size=(1.2 * run.video.frames + 1.5, 1.2 * (len(tracks) + 2)))
    for video, axis in enumerate(axes[:, 0]):
        rows = [frames[video], palette[masks[video] % len(palette)]]
        rows += [palette[np.concatenate([masks[video, :1], track[video]]) % len(palette)] for track in tracks.values()]
        report.show_images(axis, np.concatenate(rows), run.video.frames, title=f"test video {video}: frames 0…"
                           f"{run.video.frames - 1}", row_labels=["frames", "true", *tracks])
    return report.save(fig, path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    check_config(config)
    run = video_run(config)
    model, state, step = create(config, run)
    settings = colorization.ColorizationSettings.from_config(config)
    start_variables = state.variables
    features_of = encoder_features(model, settings)
    state = loop.fit(config, workdir, state=state, per_device_step=step, batches=run.batches,
                     data_parallel=run.data_parallel, num_steps=config.epochs * run.batches.steps_per_epoch,
                     evaluate=tracking_monitor(run, features_of, settings))
    learned_temperature, learned = best_tracks(
        track_test_videos(features_of(state.variables), run, settings.stride, config.track_temperatures), run)
    random_temperature, random_init = best_tracks(
        track_test_videos(features_of(start_variables), run, settings.stride, config.track_temperatures), run)
    grey_features = jax.jit(functools.partial(colorization.grey_pixel_features, stride=settings.stride))
    pixel_temperature, pixel = best_tracks(
        track_test_videos(grey_features, run, settings.stride, config.pixel_temperatures), run)
    first = run.test["masks"][:, :1]
    identity = np.repeat(first, run.video.frames - 1, axis=1)
    rows = [_iou_row(f"colourisation (learned CNN, τ={learned_temperature:g})", learned, run),
            _iou_row(f"same CNN, random init (τ={random_temperature:g})", random_init, run),
            _iou_row(f"nearest grey pixel (τ={pixel_temperature:g})", pixel, run),
            _iou_row("identity (frame 0 copied)", identity, run)]
    tracks = {"learned": learned, "random CNN": random_init, "grey pixel": pixel, "identity": identity}
    plots = [report.plot_curves(workdir, [("train", "loss"), ("eval", "tracking_iou")]),
             plot_tracks(pathlib.Path(workdir) / "tracking.png", run, tracks, min(config.figure_videos, len(first)))]
    table = report.Table(
        f"Tracking by colourisation on {len(first)} test videos ({run.video.frames} frames of "
        f"{run.video.height}×{run.video.width}, {run.video.objects} objects): {int(state.step)} steps, "
        f"{run.data_parallel.device_count} device(s); masks carried t − 1 → t from frame 0, each at its best τ; "
        "mean IoU over objects and frames",
        ["method", "mean IoU", "IoU frame 1", f"IoU frame {run.video.frames - 1}"], rows)
    scores = [row[1] for row in rows]
    return report.finish(workdir, table, plots=plots, summary={
        "tracking_iou": scores[0], "random_iou": scores[1], "pixel_iou": scores[2], "identity_iou": scores[3],
        "track_temperature": learned_temperature, "pixel_temperature": pixel_temperature,
        "steps": int(state.step)})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
