"""Supervised image classification with softmax cross-entropy: `python -m experiments.classify`.

Trains `config.model` (the small CNN on digits by default, any zoo model by name) with the shared
supervised step (`visionax.train.supervised`) through the training loop, evaluates the test split
every `eval_every` steps, and ends with a table of the last training steps and the test set
(`results.json`) and the curves (`curves.png`). `--config.init_from=<workdir>` starts from the
encoder of another run (supervised, SimCLR or MoCo); `--config.finetune=linear|top|all` makes it
transfer learning (`visionax.train.transfer`: a fresh head, frozen layers, the backbone's learning-rate
multiplier). `--config.validation_fraction=0.1` holds out a validation split, evaluated with the test
set; `--config.early_stopping.patience=5` stops on its metric and ends with the best evaluation's
parameters (`visionax.train.early_stopping`).
"""

from __future__ import annotations

import functools
import pathlib

import ml_collections

from visionax import cli, evaluate, report
from visionax.errors import UserError
from visionax.train import early_stopping, loop, optimizer, setup, supervised, transfer
from visionax.train.metrics import last_record

NAME = "classify"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
VALIDATION_METRICS = ("validation_accuracy", "validation_loss")  # what early stopping may read


def stopping_rule(config: ml_collections.ConfigDict, run: setup.Setup) -> early_stopping.Rule | None:
    """The early-stopping rule of `config` (None: off); it reads the validation split."""
    rule = early_stopping.Rule.from_config(config, VALIDATION_METRICS)
    if rule is not None and run.validation is None:
        raise UserError("early stopping reads a validation split, and there is none; pass e.g. "
                        "--config.validation_fraction=0.1 (or --config.early_stopping.patience=0)")
    return rule


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The classifier, its step-0 state (with `init_from` and the transfer settings applied) and the
    per-device supervised step of `config`, for the batches of `run`."""
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    model = setup.model_from_config(config, run.num_classes)
    num_steps = config.epochs * run.batches.steps_per_epoch
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    state, step = transfer.create(config, model, tx, run.image_shape,
                                  functools.partial(supervised.train_step, settings=settings))
    return model, state, step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    transfer.Transfer.from_config(config)  # a bad setting stops before the data is read
    run = setup.setup(config)
    stopping = stopping_rule(config, run)
    model, state, step = create(config, run)
    num_steps = config.epochs * run.batches.steps_per_epoch
    predict = functools.partial(supervised.predict, apply_fn=model.apply)

    def metrics_of(state, split):
        logits = evaluate.map_over_batches(run.data_parallel, predict, state.variables, split.images,
                                           config.batch_size)
        return evaluate.classification_metrics(logits, split.labels)

    def evaluate_splits(state, step):
        """Test accuracy and loss, and the validation split's (`validation_*`) when there is one."""
        del step
        metrics = metrics_of(state, run.test)
        if run.validation is not None:
            metrics |= {f"validation_{name}": value for name, value in metrics_of(state, run.validation).items()}
        return metrics

    state = loop.fit(config, workdir, state=state, per_device_step=step, batches=run.batches,
                     data_parallel=run.data_parallel, num_steps=num_steps, evaluate=evaluate_splits, stopping=stopping)
    # with early stopping, `state` is the best evaluation's; the steps trained are those of the last evaluation
    steps = early_stopping.read_evaluations(workdir)[-1][0] if stopping else int(state.step)
    test = metrics_of(state, run.test)
    train = last_record(workdir, "train")
    rows = [["train (last logged steps)", config.log_every * config.batch_size, train["loss"], train["accuracy"]],
            ["test", len(run.test.labels), test["loss"], test["accuracy"]]]
    summary = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "steps": steps}
    curves = [("train", "loss"), ("train", "accuracy"), ("eval", "accuracy")]
    if run.validation is not None:
        validation = metrics_of(state, run.validation)
        rows.append(["validation", len(run.validation.labels), validation["loss"], validation["accuracy"]])
        summary |= {"validation_accuracy": validation["accuracy"], "validation_loss": validation["loss"]}
        curves.append(("eval", "validation_accuracy"))
    title = f"{config.model} on {run.spec.name}: {steps} steps, {run.data_parallel.device_count} device(s)"
    if stopping:
        summary["best_step"] = int(state.step)
        title += f"; early stopping on {stopping.metric}, parameters of step {int(state.step)}"
    table = report.Table(title, ["split", "examples", "loss", "accuracy"], rows)
    plots = [report.plot_curves(workdir, curves)]
    return report.finish(workdir, table, plots=plots, summary=summary)


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
