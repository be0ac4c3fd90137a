"""Supervised image classification with softmax cross-entropy: `python -m experiments.classify`.

Trains `config.model` (the small CNN on digits by default, any zoo model by name) with the shared
supervised step (`visionax.train.supervised`) through the training loop, evaluates the test split
every `eval_every` steps, and ends with a table of the last training steps and the test set
(`results.json`) and the curves (`curves.png`). `--config.init_from=<workdir>` starts from the
encoder of another run (supervised, SimCLR or MoCo).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections

from visionax import cli, evaluate, report
from visionax.train import loop, optimizer, setup, supervised
from visionax.train.metrics import last_record
from visionax.train.state import create_train_state

NAME = "classify"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    run = setup.setup(config)
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    model = setup.model_from_config(config, run.num_classes)
    num_steps = config.epochs * run.batches.steps_per_epoch
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    state = create_train_state(jax.random.PRNGKey(config.seed), model, tx, run.image_shape,
                               init_from=config.init_from)
    predict = functools.partial(supervised.predict, apply_fn=model.apply)

    def evaluate_test(state, step):
        del step
        logits = evaluate.map_over_batches(run.data_parallel, predict, state.variables, run.test.images,
                                           config.batch_size)
        return evaluate.classification_metrics(logits, run.test.labels)

    state = loop.fit(config, workdir, state=state, per_device_step=functools.partial(
        supervised.train_step, settings=settings), batches=run.batches, data_parallel=run.data_parallel,
        num_steps=num_steps, evaluate=evaluate_test)
    test = evaluate_test(state, int(state.step))
    train = last_record(workdir, "train")
    table = report.Table(
        f"{config.model} on {run.spec.name}: {int(state.step)} steps, {run.data_parallel.device_count} device(s)",
        ["split", "examples", "loss", "accuracy"],
        [["train (last logged steps)", config.log_every * config.batch_size, train["loss"], train["accuracy"]],
         ["test", len(run.test.labels), test["loss"], test["accuracy"]]])
    plots = [report.plot_curves(workdir, [("train", "loss"), ("train", "accuracy"), ("eval", "accuracy")])]
    return report.finish(workdir, table, plots=plots, summary={
        "test_accuracy": test["accuracy"], "test_loss": test["loss"], "steps": int(state.step)})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
