"""Lecture 12's explicit densities computed exactly: the PixelCNN, the gated PixelCNN and PixelRNN's
Row LSTM side by side (`python -m experiments.pixelcnn`).

Each model (`visionax.generative.autoregressive.MODELS`) is trained by maximum likelihood on the
images quantised to `levels` values (Adam, the shared training loop, each in `<workdir>/<model>`,
so a run killed and started again resumes exactly), its test negative log-likelihood measured in
bits per dimension against the uniform bound log₂(levels), and `num_samples` images sampled pixel
by pixel (`visionax.generative.sampling`, H·W·C network evaluations per batch, the time per image
measured after compilation). The samples are scored against as many test images in the features
of a classifier trained on the same data (`experiments.sample_quality`: a Fréchet distance and a
classifier score, not Inception's). Training seconds are the training loop's wall time in this run
(compilation and the test evaluations included); sampling seconds per image exclude the sampler's
compilation. Writes `samples.png` (a grid per model), `curves.png` (training and test bits/dim of
every model) and `results.json` (the table and, under "models", each model's numbers and the class
histogram of its samples).
"""

from __future__ import annotations

import functools
import math
import pathlib
import time

import jax
import ml_collections
import numpy as np

from experiments.sample_quality import scoring_classifier
from visionax import cli, registry, report
from visionax.errors import UserError, require_positive
from visionax.evaluate.generative import ScoringClassifier
from visionax.generative import autoregressive, sampling
from visionax.generative.likelihood import dequantize, uniform_bits_per_dim
from visionax.layers.conv import CONV_IMPLS
from visionax.models.costs import parameter_total
from visionax.train import checkpoint, loop, optimizer, setup
from visionax.train.metrics import last_record
from visionax.train.precision import compute_dtype

NAME = "pixelcnn"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
MAX_LEVELS = 256  # uint8 images hold at most 256 values per sub-pixel
COLUMNS = ["model", "parameters", "test bits/dim", "Fréchet distance", "classifier score", "training seconds",
           "sampling seconds/image"]
TABLE_KEYS = ("parameters", "test_bits_per_dim", "frechet_distance", "classifier_score", "training_seconds",
              "sampling_seconds_per_image")  # each model's numbers in the columns after "model"


def check_config(config: ml_collections.ConfigDict) -> list[str]:
    """The model names of `config.models`; a UserError for any bad value that needs no data."""
    names = list(registry.lookup_many(autoregressive.MODELS, config.models, "model", "models"))
    require_positive(config, ("epochs", "num_samples", "sample_batch_size", "classifier_epochs"))
    if isinstance(config.levels, bool) or not isinstance(config.levels, int) or not 2 <= config.levels <= MAX_LEVELS:
        raise UserError(f"levels={config.levels!r} does not fit 8-bit images: pass an integer from 2 to {MAX_LEVELS} "
                        "(17 for the digits' grey levels, 256 for 8-bit colour) as --config.levels")
    if config.num_steps < 0:
        raise UserError(f"num_steps={config.num_steps} must be >= 0 (0: epochs × steps per epoch); "
                        "pass e.g. --config.num_steps=1000")
    if config.num_samples < 2:
        raise UserError(f"num_samples={config.num_samples}: the Fréchet distance needs at least 2 samples; "
                        "pass e.g. --config.num_samples=100")
    compute_dtype(config.dtype)
    registry.lookup(dict.fromkeys(CONV_IMPLS), config.conv_impl, "conv_impl")
    return names


def model_options(config: ml_collections.ConfigDict, name: str) -> dict:
    """`config.model_options.<name>` with the config's `dtype`, and its `conv_impl` unless they name one."""
    options = config.model_options.get(name, ml_collections.ConfigDict()).to_dict()
    return {"conv_impl": config.conv_impl} | options | {"dtype": compute_dtype(config.dtype)}


def training_steps(config: ml_collections.ConfigDict, run: setup.Setup) -> int:
    """`config.num_steps`, or where it is 0, `epochs` passes over the training split."""
    return config.num_steps or config.epochs * run.batches.steps_per_epoch


def create(config: ml_collections.ConfigDict, run: setup.Setup, name: str | None = None):
    """The model `name` (default: the first of `config.models`), its step-0 state and per-device step
    for the batches of `run`."""
    name = name or check_config(config)[0]
    model = autoregressive.get_model(name, config.levels, run.image_shape[-1], **model_options(config, name))
    tx = optimizer.create_optimizer(config, total_steps=training_steps(config, run),
                                    steps_per_epoch=run.batches.steps_per_epoch)
    state = autoregressive.create_state(jax.random.PRNGKey(config.seed), model, tx, run.image_shape)
    return model, state, functools.partial(autoregressive.train_step, levels=config.levels)


def draw_samples(config: ml_collections.ConfigDict, model, params, image_shape) -> tuple[np.ndarray, float]:
    """(`num_samples` uint8 samples `[n, H, W, C]`, seconds per image): batches of `sample_batch_size`
    drawn with the keys fold_in(PRNGKey(seed), batch index), timed after compiling the sampler."""
    batch = min(config.sample_batch_size, config.num_samples)
    variables = {"params": params}
    rng = jax.random.PRNGKey(config.seed)
    compiled = sampling.sample.lower(model, variables, rng, (batch, *image_shape), config.levels).compile()
    batches, started = [], time.perf_counter()
    for index in range(math.ceil(config.num_samples / batch)):
        batches.append(np.asarray(compiled(variables, jax.random.fold_in(rng, index))))
    seconds = time.perf_counter() - started
    samples = np.concatenate(batches)[:config.num_samples]
    return np.asarray(dequantize(samples, config.levels)), seconds / len(batches) / batch


def plot_samples(samples: dict[str, np.ndarray], path: pathlib.Path, grid_size: int = 10) -> pathlib.Path:
    """One panel per model: its first grid_size² samples as a grid."""
    fig, axes = report.figure(1, len(samples), panel_size=(4.0, 4.2))
    for axis, (label, images) in zip(axes[0], samples.items()):
        columns = min(grid_size, len(images))
        report.show_images(axis, images[:columns * columns], columns, f"{label}: samples drawn pixel by pixel")
    return report.save(fig, path)


def train_model(config: ml_collections.ConfigDict, run: setup.Setup, workdir: pathlib.Path, name: str, created,
                scorer: ScoringClassifier) -> tuple[dict, np.ndarray, dict]:
    """Train model `name` in `workdir` (resuming), sample it and score the samples: (its numbers for the
    table and summary, the uint8 samples, the scores of `ScoringClassifier.scores`)."""
    model, state, step = created
    test_images = run.test.images

    def evaluate(state, _step):
        return {"bits_per_dim": autoregressive.dataset_bits_per_dim(
            run.data_parallel, model.apply, state.params, test_images, config.levels, config.batch_size)}

    started = time.perf_counter()
    state = loop.fit(ml_collections.ConfigDict(config.to_dict() | {"model": name}), workdir, state=state,
                     per_device_step=step, batches=run.batches, data_parallel=run.data_parallel,
                     num_steps=training_steps(config, run), evaluate=evaluate)
    training_seconds = time.perf_counter() - started
    samples, sampling_seconds = draw_samples(config, model, state.params, run.image_shape)
    scores = scorer.scores(run.data_parallel, test_images[:config.num_samples], samples, config.batch_size)
    numbers = {"parameters": parameter_total(state.params),
               "test_bits_per_dim": last_record(workdir, "eval")["bits_per_dim"],
               "train_bits_per_dim": last_record(workdir, "train")["bits_per_dim"],
               "frechet_distance": scores["frechet_distance"], "classifier_score": scores["classifier_score"],
               "class_histogram": scores["class_histogram"], "training_seconds": round(training_seconds, 1),
               "sampling_seconds_per_image": sampling_seconds}
    return numbers, samples, scores


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    names = check_config(config)
    run = setup.setup(config)
    if config.num_samples > len(run.test.images):
        raise UserError(f"num_samples={config.num_samples} exceeds the {len(run.test.images)} test images the "
                        f"samples are scored against; pass --config.num_samples={len(run.test.images)} or less")
    for name in names:  # bad options stop here, before any model is initialised
        autoregressive.get_model(name, config.levels, run.image_shape[-1], **model_options(config, name))
    created = {name: create(config, run, name) for name in names}
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    scorer = scoring_classifier(config, workdir)
    rows, runs, samples, models = [], {}, {}, {}
    for name in names:
        label = autoregressive.LABELS[name]
        runs[label] = pathlib.Path(workdir) / name
        models[name], samples[label], scores = train_model(config, run, runs[label], name, created[name], scorer)
        rows.append([label, *(models[name][key] for key in TABLE_KEYS)])
    uniform = uniform_bits_per_dim(config.levels)
    rows.append([f"uniform (log₂ {config.levels})", None, uniform, None, None, None, None])
    height, width, channels = run.image_shape
    num_steps = training_steps(config, run)
    table = report.Table(
        f"autoregressive models on {run.spec.name} ({height}×{width}×{channels}, {config.levels} levels): "
        f"{num_steps} steps of {config.batch_size}, {config.num_samples} samples each", COLUMNS, rows)
    plots = [plot_samples(samples, pathlib.Path(workdir) / "samples.png"),
             report.plot_runs(runs, [("train", "bits_per_dim"), ("eval", "bits_per_dim")],
                              pathlib.Path(workdir) / "curves.png", title="bits per dimension (test: eval)")]
    return report.finish(workdir, table, plots=plots, summary={
        "models": models, "uniform_bits_per_dim": uniform, "levels": config.levels, "steps": num_steps,
        "num_samples": config.num_samples,
        "real_classifier_score": scores["real_classifier_score"]})  # the same test images for every model


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
