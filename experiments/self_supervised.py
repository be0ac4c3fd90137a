"""What the self-supervised experiments (SimCLR, MoCo, CPC, the pretext tasks) share: the encoder
built from the config, the step-0 state, the training run, and its end: the learned encoder's features
against raw pixels and a randomly initialised encoder (weighted kNN and linear probe with all, 10% and
1% of the training labels, the same subsets for every row: `evaluate.label_efficiency`), the plots,
`results.json`, and with `save_embeddings` the encoder's train and test features in `embeddings.npz`."""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections
import numpy as np

from visionax import evaluate, report
from visionax.ssl.heads import ContrastiveModel, embed
from visionax.train import loop, optimizer, setup
from visionax.train.state import TrainState, create_train_state

EMBEDDINGS_FILE = "embeddings.npz"


def encoder(config: ml_collections.ConfigDict, **options):
    """The backbone `config.model` as a feature extractor `[batch, h, w, c] → [batch, features]`;
    `options` such as `bn_axis_name` or `bn_splits` add to `config.model_options`."""
    return setup.model_from_config(config, None, **options)


def training_setup(experiment, config: ml_collections.ConfigDict) -> setup.Setup:
    """The set-up whose batches `experiment`'s step trains on: `setup.setup(config)`, through the
    experiment's `training_run(config, run)` where it trains on other data than it is evaluated on
    (CLIP: the captioned canvases)."""
    run = setup.setup(config)
    training_run = getattr(experiment, "training_run", None)
    return run if training_run is None else training_run(config, run)


def create_state(config: ml_collections.ConfigDict, run: setup.Setup, model, input_shape=None) -> TrainState:
    """The step-0 state of `model` (initialised on one input of `input_shape`, default the images'; or
    from `config.init_from`) with `config`'s optimizer and schedule over `config.epochs` epochs of `run`."""
    num_steps = config.epochs * run.batches.steps_per_epoch
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    return create_train_state(jax.random.PRNGKey(config.seed), model, tx, input_shape or run.image_shape,
                              init_from=config.init_from)


def finish(config: ml_collections.ConfigDict, workdir: str, run: setup.Setup, model: ContrastiveModel,
           state, start_variables: dict, method: str, *, embed_function=embed, summary: dict | None = None) -> dict:
    """Print the comparison table (learned encoder vs raw pixels vs the encoder it started from:
    its random initialisation, or the `init_from` encoder), write the plots, `results.json` and
    (`save_embeddings`) the embeddings. `embed_function(model, variables, images)` gives the
    encoder's features (`heads.embed`; CPC: `visionax.ssl.cpc.embed`); `summary` adds the method's own
    results to `results.json` (CLIP: the zero-shot accuracy and the recalls)."""
    embed_fn = functools.partial(embed_function, model)
    start = "initial encoder (init_from)" if config.init_from else "random encoder"

    def features_of(variables):
        return tuple(evaluate.encoder_features(run.data_parallel, embed_fn, variables, split.images,
                                               config.batch_size) for split in (run.train, run.test))

    candidates = {
        "raw pixels": (evaluate.pixel_features(run.train.images), evaluate.pixel_features(run.test.images)),
        start: features_of(start_variables),
        "learned encoder": features_of(state.variables),
    }
    rows, scores = [], {}
    for name, (train, test) in candidates.items():
        scores[name] = evaluate.label_efficiency(train, test, run.train, run.test, run.num_classes, config.seed)
        rows.append([name, train.shape[1], *label_efficiency_cells(scores[name])])
    learned_train, learned_test = candidates["learned encoder"]
    workdir_path = pathlib.Path(workdir)
    if config.save_embeddings and jax.process_index() == 0:
        np.savez(workdir_path / EMBEDDINGS_FILE, train=learned_train, train_labels=run.train.labels,
                 test=learned_test, test_labels=run.test.labels)
    plots = [report.plot_curves(workdir, [("train", "loss"), ("eval", "knn_accuracy")]),
             report.plot_embedding(learned_test, run.test.labels, workdir_path / "embedding.png")]
    table = report.Table(
        f"{method} on {run.spec.name}: {int(state.step)} steps, {run.data_parallel.device_count} device(s), "
        f"{config.model}", ["features", "dimension", *LABEL_EFFICIENCY_COLUMNS], rows)
    learned, all_labels = scores["learned encoder"], evaluate.fraction_name(1.0)
    return report.finish(workdir, table, plots=plots, summary={
        "knn_accuracy": learned[all_labels]["knn_accuracy"], "probe_accuracy": learned[all_labels]["probe_accuracy"],
        "pixel_knn_accuracy": scores["raw pixels"][all_labels]["knn_accuracy"],
        "random_knn_accuracy": scores[start][all_labels]["knn_accuracy"], "steps": int(state.step),
        "label_efficiency": scores, **(summary or {})})


# kNN and linear probe accuracy with all the training labels, then with 10% and 1% of them
LABEL_EFFICIENCY_COLUMNS = ["kNN accuracy", "linear probe accuracy"] + [
    f"{method} ({evaluate.fraction_name(fraction)} labels)"
    for fraction in evaluate.LABEL_FRACTIONS[1:] for method in ("kNN", "probe")]


def label_efficiency_cells(scores: dict[str, dict[str, float]]) -> list[float]:
    """The `LABEL_EFFICIENCY_COLUMNS` cells of one representation's `evaluate.label_efficiency` scores."""
    return [scores[evaluate.fraction_name(fraction)][metric]
            for fraction in evaluate.LABEL_FRACTIONS for metric in ("knn_accuracy", "probe_accuracy")]


def train(config: ml_collections.ConfigDict, workdir: str, run: setup.Setup, model: ContrastiveModel, state, step,
          method: str, *, embed_function=embed) -> dict:
    """Train `state` with the per-device `step` through the loop (the kNN monitor every
    `eval_every` steps) and `finish`: the run of SimCLR, MoCo and CPC after their own set-up."""
    start_variables = state.variables
    state = loop.fit(config, workdir, state=state, per_device_step=step, batches=run.batches,
                     data_parallel=run.data_parallel, num_steps=config.epochs * run.batches.steps_per_epoch,
                     evaluate=knn_monitor(config, run, model, embed_function=embed_function))
    return finish(config, workdir, run, model, state, start_variables, method, embed_function=embed_function)


def knn_monitor(config: ml_collections.ConfigDict, run: setup.Setup, model: ContrastiveModel, *,
                embed_function=embed):
    """The loop's evaluation: weighted kNN test accuracy of the encoder's features."""
    return evaluate.knn_monitor(run.data_parallel, functools.partial(embed_function, model), run.train, run.test,
                                run.num_classes, config.batch_size)
