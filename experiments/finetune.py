"""Lecture 7's transfer learning in its four situations: a network pretrained on one task, then
trained on a new one with few or many labels, from scratch, as a fixed feature extractor (a new
linear classifier on the frozen network), with its top stage fine-tuned, or with every layer
fine-tuned (`visionax.train.transfer`).

The pretraining sees digits 0–4 (`source_classes`): supervised (`experiments.classify`, in
`<workdir>/pretrain_supervised`) and SimCLR (`experiments.simclr`, which never sees a label, in
`<workdir>/pretrain_simclr`), or the finished runs named by `pretrained_supervised` /
`pretrained_simclr`. The new task is digits 5–9 (`target_classes`) with 1%, 10% and 100% of their
training labels (`label_fractions`, stratified); every cell of the table is an ordinary
`experiments.classify` run in `<workdir>/<pretraining>_<case>_<fraction>` (`scratch_<fraction>`
from scratch) of the same number of steps, so a run stopped and started again resumes the cell it
was in and skips the finished ones. The table holds test accuracy on digits 5–9 (`results.json`,
with the case that wins each column) and `transfer.png` plots it against the label fraction.

    python -m experiments.finetune      # ResNet-18 width 8, 21 runs: 8 min on 2 CPU cores (MEASUREMENTS.md)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import classify, simclr
from experiments.configs import classify as classify_config
from experiments.configs import simclr as simclr_config
from visionax import cli, data, registry, report
from visionax.data.subsets import class_indices, parse_classes, stratified_fraction
from visionax.errors import UserError, require_positive
from visionax.train import checkpoint, setup, transfer

NAME = "finetune"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
CASES = {"scratch": "from scratch", "linear": "feature extractor", "top": "top stages", "all": "all layers"}
PRETRAININGS = {"supervised": (classify, "supervised"), "simclr": (simclr, "SimCLR")}
SHARED_KEYS = ("seed", "model", "dtype", "conv_impl", "parallel", "log_every", "checkpoint_every",
               "keep_checkpoints", "eval_every")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One run of the table: `case` after `pretraining` ("" from scratch) with `fraction` of the labels."""

    pretraining: str
    case: str
    fraction: float

    @property
    def name(self) -> str:
        return f"{self.pretraining + '_' if self.pretraining else ''}{self.case}_{self.fraction:g}"

    @property
    def row(self) -> str:
        if not self.pretraining:
            return CASES[self.case]
        return f"{PRETRAININGS[self.pretraining][1]}: {CASES[self.case]}"


def parse_fractions(text: str) -> tuple[float, ...]:
    """The comma-separated label fractions of `text`, each in (0, 1]."""
    try:
        fractions = tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        fractions = ()
    if not fractions or not all(0 < fraction <= 1 for fraction in fractions):
        raise UserError(f"label_fractions={text!r} must be comma-separated numbers in (0, 1]; "
                        "pass e.g. --config.label_fractions=0.01,0.1,1.0")
    return fractions


def cells_of(config: ml_collections.ConfigDict) -> list[Cell]:
    """Every run of the table, row by row: from scratch once, the other cases per pretraining."""
    cases = registry.lookup_many(CASES, config.cases, "case", "cases")
    pretrainings = registry.lookup_many(PRETRAININGS, config.pretrainings, "pretraining", "pretrainings")
    fractions = parse_fractions(config.label_fractions)
    rows = [("", "scratch")] if "scratch" in cases else []
    rows += [(pretraining, case) for pretraining in pretrainings for case in cases if case != "scratch"]
    return [Cell(pretraining, case, fraction) for pretraining, case in rows for fraction in fractions]


def _data(config: ml_collections.ConfigDict, classes: str, fraction: float = 1.0) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.data.to_dict() | {"classes": classes, "label_fraction": fraction})


def _shared(run_config: ml_collections.ConfigDict, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`run_config` with the network, seed and cadence of `config`."""
    for key in SHARED_KEYS:
        run_config[key] = config[key]
    run_config.model_options = ml_collections.ConfigDict(config.model_options.to_dict())
    return run_config


def pretraining_config(config: ml_collections.ConfigDict, pretraining: str) -> ml_collections.ConfigDict:
    """The `experiments.classify` or `experiments.simclr` config that pretrains on the source classes."""
    run_config = _shared(classify_config.get_config() if pretraining == "supervised" else simclr_config.get_config(),
                         config)
    run_config.data = _data(config, config.source_classes)
    run_config.update(config[pretraining].to_dict())
    return run_config


def labelled_counts(config: ml_collections.ConfigDict, fractions) -> dict[float, int]:
    """{fraction: training examples of the target classes kept at that fraction of the labels}."""
    spec = data.DatasetSpec.from_config(config.data)
    source = data.data_source(spec, "train")
    labels = np.asarray([source[index]["label"] for index in range(len(source))])
    indices, _ = class_indices(labels, parse_classes(config.target_classes, data.num_classes(spec)))
    return {fraction: len(stratified_fraction(labels[indices], fraction, config.seed)) for fraction in fractions}


def cell_config(config: ml_collections.ConfigDict, cell: Cell, init_from: str, examples: int
                ) -> ml_collections.ConfigDict:
    """The `experiments.classify` config of `cell` on its `examples` labelled training examples: a
    batch of min(transfer.batch_size, examples) (a multiple of the device count), and the epochs
    that make at least transfer.steps steps."""
    settings, devices = config.transfer, jax.device_count()
    batch_size = min(settings.batch_size, examples) // devices * devices
    if batch_size < 1:
        raise UserError(f"label fraction {cell.fraction:g} keeps {examples} training examples, fewer than the "
                        f"{devices} devices; pass larger --config.label_fractions")
    run_config = _shared(classify_config.get_config(), config)
    run_config.data = _data(config, config.target_classes, cell.fraction)
    run_config.batch_size = batch_size
    run_config.epochs = math.ceil(settings.steps / (examples // batch_size))
    for key in ("optimizer", "learning_rate", "weight_decay"):
        run_config[key] = settings[key]
    if cell.case != "scratch":
        run_config.init_from = init_from
        run_config.finetune = cell.case
        run_config.finetune_stages = settings.finetune_stages
        run_config.backbone_lr_multiplier = settings.backbone_lr_multiplier
    return run_config


def check_config(config: ml_collections.ConfigDict) -> tuple[list[Cell], dict[float, int]]:
    """The cells of the table and the labelled examples at each fraction; a UserError for any bad
    value, before anything is written."""
    cells = cells_of(config)
    require_positive(config.transfer, ("steps", "batch_size", "finetune_stages"))
    for pretraining in {cell.pretraining for cell in cells if cell.pretraining}:
        require_positive(config[pretraining], ("epochs", "batch_size"))
        given = config[f"pretrained_{pretraining}"]
        if given and not (pathlib.Path(given) / checkpoint.CHECKPOINT_DIR).is_dir():
            raise UserError(f"pretrained_{pretraining}={given!r} holds no checkpoints; pass the --workdir of a "
                            f"finished experiments.{PRETRAININGS[pretraining][0].NAME} run, or '' to train one")
    num_classes = data.num_classes(data.DatasetSpec.from_config(config.data))
    for key in ("source_classes", "target_classes"):
        try:
            parse_classes(config[key], num_classes)
        except UserError:
            raise UserError(f"{key}={config[key]!r} must be distinct comma-separated class indices in "
                            f"0..{num_classes - 1}; pass e.g. --config.{key}=5,6,7,8,9") from None
    counts = labelled_counts(config, dict.fromkeys(cell.fraction for cell in cells))
    settings = {cell.case: transfer.Transfer.from_config(cell_config(config, cell, "<pretrained>",
                                                                      counts[cell.fraction])) for cell in cells}
    if "top" in settings:  # the stages of the model, from the shapes of its variables only
        model = setup.model_from_config(config, len(config.target_classes.split(",")))
        shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.PRNGKey(0),
                                jnp.zeros((1, 32, 32, 3)))
        transfer.parameter_groups(config.model, shapes["params"], settings["top"])
    return cells, counts


def pretrain(config: ml_collections.ConfigDict, pretraining: str, workdir: pathlib.Path) -> str:
    """The workdir of the pretrained run: `pretrained_<pretraining>`, or one trained (or finished) here."""
    given = config[f"pretrained_{pretraining}"]
    if given:
        return given
    run_workdir = workdir / f"pretrain_{pretraining}"
    if report.finished_results(run_workdir) is None:
        PRETRAININGS[pretraining][0].train_and_evaluate(pretraining_config(config, pretraining), str(run_workdir))
    return str(run_workdir)


def plot(cells: list[Cell], accuracy: dict[str, float], path: pathlib.Path) -> pathlib.Path:
    """Test accuracy against the label fraction (log scale), one line per case."""
    fig, axes = report.figure(panel_size=(7.0, 4.5))
    axis = axes[0, 0]
    for row in dict.fromkeys(cell.row for cell in cells):
        points = [(cell.fraction, accuracy[cell.name]) for cell in cells if cell.row == row]
        axis.plot(*zip(*points), "o-", label=row)
    axis.set_xscale("log")
    axis.set_xlabel("fraction of the labels of the new task")
    axis.set_ylabel("test accuracy")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return report.save(fig, path, title="Transfer learning: new task with few or many labels")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    cells, counts = check_config(config)
    fractions = list(counts)
    workdir_path = pathlib.Path(workdir)
    checkpoint.claim_workdir(workdir_path, config)  # everything checked: now the workdir is this run's
    pretrained = {pretraining: pretrain(config, pretraining, workdir_path)
                  for pretraining in dict.fromkeys(cell.pretraining for cell in cells if cell.pretraining)}
    accuracy = {}
    for cell in cells:
        cell_workdir = workdir_path / cell.name
        results = report.finished_results(cell_workdir)
        if results is None:
            results = classify.train_and_evaluate(
                cell_config(config, cell, pretrained.get(cell.pretraining, ""), counts[cell.fraction]),
                str(cell_workdir))
        accuracy[cell.name] = results["test_accuracy"]
    classes = len(config.target_classes.split(","))
    columns = [f"{fraction:.0%} ({counts[fraction]} labels)" for fraction in fractions]
    rows = [[row, *(accuracy[cell.name] for cell in cells if cell.row == row)]
            for row in dict.fromkeys(cell.row for cell in cells)]
    best = {f"{fraction:g}": max((cell for cell in cells if cell.fraction == fraction),
                                 key=lambda cell: accuracy[cell.name]).row for fraction in fractions}
    rows.append(["best", *best.values()])
    table = report.Table(
        f"{config.model} pretrained on digits {config.source_classes}, test accuracy on digits "
        f"{config.target_classes} ({classes} classes) after {config.transfer.steps} steps, by share of the labels",
        ["case", *columns], rows)
    plots = [plot(cells, accuracy, workdir_path / "transfer.png")]
    return report.finish(workdir, table, plots=plots, summary={
        "test_accuracy": accuracy, "labelled_examples": {f"{f:g}": n for f, n in counts.items()}, "best": best,
        "pretrained": pretrained})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
