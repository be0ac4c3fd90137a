"""One evaluation for every representation of lecture 13: `python -m experiments.representations`.

Trains every method of `config.methods` (supervised classification, the pretext tasks, CPC, SimCLR,
MoCo v2, CLIP's image tower), each from its own digits config or (`config.cifar10_recipes`) its own
CIFAR-10 recipe, with the same encoder (`config.model`, `config.model_options`) for the
same training time: every method's step is timed before any method trains (`config.calibration_steps`
steps after its compilation, all under the same conditions) and its run given the whole epochs that fit
`config.budget_seconds` (at least one; kept in `budget.json`, so a restarted run resumes with the same
schedule and a busy machine during training costs time, not epochs). Every run lives in
`<workdir>/<method>` (finished runs are read, interrupted ones resumed), writes its encoder's train and
test features (`embeddings.npz`; the supervised classifier's features before its head are computed
here from its checkpoint), and all of them, raw pixels and a randomly initialised encoder are scored
the same way: weighted kNN (k = 200, τ = 0.1) and the linear probe with 100%, 10% and 1% of the
training labels, the same subsets for every row (`evaluate.label_efficiency`). The table states the
encoder, the budget and what each method got of it (`results.json`, `label_efficiency.png`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from experiments import self_supervised
from visionax import cli, evaluate, registry, report
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.train import checkpoint, feed, setup
from visionax.train.pretrained import load_pretrained
from visionax.train.state import initial_variables

NAME = "representations"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
BUDGET_FILE = "budget.json"
# what every method's run takes from this config: the same encoder, images per batch, data, seed and devices
SHARED_KEYS = ("model", "model_options", "dtype", "conv_impl", "batch_size", "data", "seed", "parallel")


@dataclasses.dataclass(frozen=True)
class Method:
    label: str  # the table's row name
    experiment: str  # the module experiments.<experiment> that trains it
    config: str  # its digits config: "<module>" or "<module>:<variant>" of experiments.configs
    cifar10_config: str | None  # its CIFAR-10 recipe, the same way (None: it has none)

    def module(self):
        return importlib.import_module(f"experiments.{self.experiment}")

    def default_config(self, cifar10: bool) -> ml_collections.ConfigDict:
        """Its digits config, or with `cifar10` its CIFAR-10 recipe."""
        module, _, variant = (self.cifar10_config if cifar10 else self.config).partition(":")
        get_config = importlib.import_module(f"experiments.configs.{module}").get_config
        return get_config(variant) if variant else get_config()


METHODS = {
    "supervised": Method("supervised (labels)", "classify", "classify", "classify_cifar10"),
    "rotation": Method("rotation", "rotation", "rotation", "rotation:cifar10"),
    "relative_position": Method("relative position", "relative_position", "relative_position",
                                "relative_position:cifar10"),
    "context_encoder": Method("context encoder", "context_encoder", "context_encoder", "context_encoder:cifar10"),
    "split_brain": Method("split-brain autoencoder", "split_brain", "split_brain", "split_brain:cifar10"),
    "cpc": Method("CPC", "cpc", "cpc", "cpc:cifar10"),
    "simclr": Method("SimCLR", "simclr", "simclr", "simclr_cifar10:cpu30"),
    "moco": Method("MoCo v2", "moco", "moco", "moco_cifar10:cpu30"),
    "clip": Method("CLIP image tower", "clip", "clip", None),  # an image folder has no captions
}


def method_config(config: ml_collections.ConfigDict, name: str, epochs: int) -> ml_collections.ConfigDict:
    """The config of method `name`'s run: its digits config or (`config.cifar10_recipes`) its CIFAR-10
    recipe, then this config's `SHARED_KEYS`, `epochs` epochs, embeddings saved, no evaluation during
    training."""
    run_config = METHODS[name].default_config(config.cifar10_recipes)
    with run_config.unlocked():
        for key in SHARED_KEYS:
            run_config[key] = ml_collections.ConfigDict(config[key]) if isinstance(
                config[key], ml_collections.ConfigDict) else config[key]
        if "save_embeddings" in run_config:
            run_config.save_embeddings = True
        run_config.epochs = epochs
        run_config.eval_every = 0
    return run_config


def seconds_per_step(module, run_config: ml_collections.ConfigDict, steps: int) -> tuple[float, int]:
    """(seconds per training step of `module`'s model, state and per-device step as its loop runs
    them, timed over `steps` steps after one compiling step; the run's steps per epoch)."""
    run = self_supervised.training_setup(module, run_config)
    _, state, step = module.create(run_config, run)
    fed_step = feed.feed(run_config, run.batches, run.data_parallel).step(step, donate=False)
    placed = run.data_parallel.put_state(state)
    placed, metrics = fed_step(placed, 0)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for index in range(1, steps + 1):
        placed, metrics = fed_step(placed, index)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / steps, run.batches.steps_per_epoch


def plan(config: ml_collections.ConfigDict, name: str, budget: dict) -> dict:
    """`budget[name]`, timed and written to `budget.json` when it is not there yet: the seconds per
    step, steps per epoch and the epochs that fit `config.budget_seconds`."""
    if name not in budget:
        seconds, steps_per_epoch = seconds_per_step(METHODS[name].module(), method_config(config, name, 1),
                                                    config.calibration_steps)
        epochs = max(1, int(config.budget_seconds // (seconds * steps_per_epoch)))
        budget[name] = {"seconds_per_step": seconds, "steps_per_epoch": steps_per_epoch, "epochs": epochs,
                        "planned_seconds": epochs * steps_per_epoch * seconds}
    return budget[name]


def train_method(config: ml_collections.ConfigDict, name: str, entry: dict, workdir: pathlib.Path) -> dict:
    """Method `name`'s results: read when its run in `workdir` finished, else trained (or resumed) there."""
    results = report.finished_results(workdir)
    if results is not None:
        return results
    start = time.perf_counter()
    results = METHODS[name].module().train_and_evaluate(method_config(config, name, entry["epochs"]), str(workdir))
    entry["run_seconds"] = time.perf_counter() - start
    return results


def classifier_features(config: ml_collections.ConfigDict, run: setup.Setup, workdir: str | None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) features `[n, features]` of the encoder `config.model` (its global pooling,
    before any classifier head): freshly initialised from `config.seed` (None), or the encoder of the
    newest checkpoint in `workdir` (the supervised classifier's)."""
    encoder = self_supervised.encoder(config)
    variables = initial_variables(jax.random.PRNGKey(config.seed), encoder, run.image_shape)
    if workdir is not None:
        variables = load_pretrained(variables, workdir)

    def embed(variables, images):
        return encoder.apply(variables, model_input(images), train=False)

    return tuple(evaluate.encoder_features(run.data_parallel, embed, variables, split.images, config.batch_size)
                 for split in (run.train, run.test))


def saved_embeddings(workdir: pathlib.Path, run: setup.Setup) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) features a self-supervised run wrote with `save_embeddings`, checked to be of
    this data's images."""
    saved = np.load(workdir / self_supervised.EMBEDDINGS_FILE)
    if not (np.array_equal(saved["train_labels"], run.train.labels)
            and np.array_equal(saved["test_labels"], run.test.labels)):
        raise UserError(f"{workdir}/{self_supervised.EMBEDDINGS_FILE} holds features of other data; use a fresh "
                        "--workdir for this --config.data")
    return saved["train"], saved["test"]


def check_config(config: ml_collections.ConfigDict) -> dict[str, Method]:
    methods = registry.lookup_many(METHODS, config.methods, "method", "methods")
    if config.cifar10_recipes:
        for name, method in methods.items():
            if method.cifar10_config is None:
                raise UserError(f"method {name!r} has no CIFAR-10 recipe (cifar10_recipes=True); drop it from "
                                "--config.methods")
    if not config.budget_seconds > 0 or config.calibration_steps < 1:
        raise UserError(f"budget_seconds={config.budget_seconds} must be > 0 and calibration_steps="
                        f"{config.calibration_steps} >= 1; pass e.g. --config.budget_seconds=60")
    return methods


def plot(scores: dict[str, dict[str, dict[str, float]]], path: pathlib.Path) -> pathlib.Path:
    """Linear probe test accuracy against the share of the labels (log scale), one line per row."""
    fig, axes = report.figure(panel_size=(7.0, 4.5))
    axis = axes[0, 0]
    for name, by_fraction in scores.items():
        axis.plot(evaluate.LABEL_FRACTIONS, [by_fraction[evaluate.fraction_name(fraction)]["probe_accuracy"]
                                             for fraction in evaluate.LABEL_FRACTIONS], "o-", label=name)
    axis.set_xscale("log")
    axis.set_xlabel("share of the training labels")
    axis.set_ylabel("linear probe test accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    return report.save(fig, path, title="Label efficiency of every representation")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    methods = check_config(config)
    run = setup.setup(config)
    workdir_path = pathlib.Path(workdir)
    checkpoint.claim_workdir(workdir_path, config)  # everything checked: now the workdir is this run's
    budget_path = workdir_path / BUDGET_FILE
    budget = json.loads(budget_path.read_text()) if budget_path.exists() else {}
    features = {"raw pixels": tuple(evaluate.pixel_features(split.images) for split in (run.train, run.test)),
                "random encoder": classifier_features(config, run, None)}
    rows_training = {"raw pixels": "—", "random encoder": "—"}
    for name in methods:  # every method timed before any trains
        plan(config, name, budget)
        if jax.process_index() == 0:
            budget_path.write_text(json.dumps(budget, indent=2))
    for name, method in methods.items():
        entry = budget[name]
        method_workdir = workdir_path / name
        results = train_method(config, name, entry, method_workdir)
        if jax.process_index() == 0:
            budget_path.write_text(json.dumps(budget, indent=2))
        features[method.label] = (classifier_features(config, run, str(method_workdir)) if name == "supervised"
                                  else saved_embeddings(method_workdir, run))
        epochs = entry["epochs"]
        rows_training[method.label] = (f"{results['steps']} steps ({epochs} epoch{'s' * (epochs != 1)}, "
                                       f"≈{entry['planned_seconds']:.0f} s)")
    scores = {name: evaluate.label_efficiency(train, test, run.train, run.test, run.num_classes, config.seed)
              for name, (train, test) in features.items()}
    rows = [[name, rows_training[name], train.shape[1], *self_supervised.label_efficiency_cells(scores[name])]
            for name, (train, test) in features.items()]
    options = ", ".join(f"{key}={value}" for key, value in config.model_options.items())
    table = report.Table(
        f"Representations on {run.spec.name}: {config.model} ({options}) for every method, "
        f"{config.budget_seconds:g} s of training each, {run.data_parallel.device_count} device(s)",
        ["representation", "training", "dimension", *self_supervised.LABEL_EFFICIENCY_COLUMNS], rows)
    plots = [plot(scores, workdir_path / "label_efficiency.png")]
    return report.finish(workdir, table, plots=plots, summary={"label_efficiency": scores, "budget": budget})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
