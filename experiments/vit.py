"""A small ViT against ResNet-18 at equal training time: `python -m experiments.vit`.

Both models (config blocks `vit` and `resnet`: model, options, convolution implementation,
optimizer) read the same batches with the same loss and augmentation through the shared
supervised step (`visionax.train.supervised`) and training loop, each in `<workdir>/<block>`, and
are evaluated on the test split along the way.

Equal training time. A model's training seconds are the wall-clock of its compiled training steps,
each waited for (`jax.block_until_ready`), summed; compilation, batch assembly, logging,
checkpoints and evaluations fall outside them (compilation is reported apart). Before anything is
written, each model's step is compiled and run on `calibration_steps` + 1 batches; the median of the
timed ones after the first (a warm-up) is its seconds per step s. The budget B is
`time_budget_seconds` when given; otherwise the ViT trains `epochs` epochs and B is its measured
training seconds. A model trained to the budget takes n = max(1, ⌊B / s⌋) steps, the most whole
steps that fit in B at its calibrated speed, and its schedule spans those n steps; its measured
seconds are reported beside B (a machine whose load changes shows there, in seconds / budget).
A comparison is one uninterrupted run: a workdir holding one is refused (its timings cannot be
resumed).

Writes `results.json` (the table: steps, epochs, seconds per step, training and compile seconds,
test accuracy of each model) and `curves.png` (test accuracy of both models against training
seconds and against the step).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import statistics
import time
from collections.abc import Callable

import jax
import ml_collections

from visionax import cli, evaluate, parallel, report
from visionax.errors import UserError, require_positive
from visionax.models.costs import parameter_total
from visionax.train import checkpoint, loop, optimizer, setup, supervised
from visionax.train.metrics import read_metrics
from visionax.train.state import TrainState, create_train_state

NAME = "vit"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
MODELS = ("vit", "resnet")  # the config blocks, in training order: the first may set the budget
Clock = Callable[[], float]


@dataclasses.dataclass
class StepTimes:
    """The seconds measured around one model's compiled training step."""

    compile_seconds: float = 0.0
    step_seconds: list[float] = dataclasses.field(default_factory=list)

    @property
    def training_seconds(self) -> float:
        return math.fsum(self.step_seconds)


@dataclasses.dataclass(frozen=True)
class TimedDataParallel(parallel.DataParallel):
    """A `DataParallel` whose `step` is compiled at its first call and then waited for at every call,
    the seconds of both recorded in `times` as read from `clock`."""

    clock: Clock = time.perf_counter
    times: StepTimes = dataclasses.field(default_factory=StepTimes)

    @classmethod
    def of(cls, data_parallel: parallel.DataParallel, clock: Clock) -> TimedDataParallel:
        return cls(data_parallel.mesh, data_parallel.impl, clock=clock)

    def step(self, per_device_step, *, donate: bool = True):
        jitted = super().step(per_device_step, donate=donate)
        compiled = None

        def timed_step(state, batch):
            nonlocal compiled
            if compiled is None:
                start = self.clock()
                compiled = jitted.lower(state, batch).compile()
                self.times.compile_seconds += self.clock() - start
            start = self.clock()
            outputs = jax.block_until_ready(compiled(state, batch))
            self.times.step_seconds.append(self.clock() - start)
            return outputs

        return timed_step


@dataclasses.dataclass(frozen=True)
class Contender:
    """One model of the comparison: its config (the shared keys with its block's), its step-0 state
    and its calibrated speed."""

    name: str
    config: ml_collections.ConfigDict
    state: TrainState
    seconds_per_step: float


def planned_steps(budget_seconds: float, seconds_per_step: float) -> int:
    """n = max(1, ⌊B / s⌋): the most whole steps of `seconds_per_step` in `budget_seconds` (a relative
    1e-9 keeps B / s from landing a rounding error below a whole number)."""
    return max(1, math.floor(budget_seconds / seconds_per_step * (1 + 1e-9)))


def check_comparison(config: ml_collections.ConfigDict, workdir: str) -> None:
    """UserError for a bad budget, count of calibration steps or evaluations, or a workdir that
    already holds a comparison."""
    budget = config.time_budget_seconds
    if budget is not None and not budget > 0:
        raise UserError(f"time_budget_seconds={budget} must be positive; pass e.g. "
                        "--config.time_budget_seconds=60, or leave it unset for the ViT's epochs")
    require_positive(config, ("calibration_steps", "evaluations", "epochs"))
    held = [str(pathlib.Path(workdir) / name) for name in MODELS if (pathlib.Path(workdir) / name).exists()]
    if held:
        raise UserError(f"workdir {workdir!r} already holds a comparison ({held[0]}); timings cannot be "
                        "resumed: pass a new --workdir")


def model_config(config: ml_collections.ConfigDict, name: str, **changes) -> ml_collections.ConfigDict:
    """The flat config of model `name`: the shared keys, the keys of its block, then `changes`."""
    shared = {key: value for key, value in config.to_dict().items() if key not in MODELS}
    return ml_collections.ConfigDict(shared | config[name].to_dict() | changes)


def measure_step_seconds(state: TrainState, step, run: setup.Setup, calibration_steps: int, clock: Clock) -> float:
    """Compile `step` for a copy of `state`, run it on batches 0 … `calibration_steps`: the median
    seconds of the timed steps after the first."""
    timed = TimedDataParallel.of(run.data_parallel, clock)
    compiled = timed.step(step)
    device_state = timed.put_state(state)
    for index in range(calibration_steps + 1):
        device_state, _ = compiled(device_state, timed.put_batch(run.batches.host_batch(index)))
    return statistics.median(timed.times.step_seconds[1:])


def prepare(config: ml_collections.ConfigDict, run: setup.Setup, step, clock: Clock) -> list[Contender]:
    """Every model built and initialised (a bad name, option or optimizer setting fails here, before
    anything is compiled), then each one's step timed under a provisional optimizer over `epochs`."""
    states = {}
    for name in MODELS:
        flat = model_config(config, name)
        model = setup.model_from_config(flat, run.num_classes)
        tx = optimizer.create_optimizer(flat, total_steps=config.epochs * run.batches.steps_per_epoch,
                                        steps_per_epoch=run.batches.steps_per_epoch)
        states[name] = (flat, create_train_state(jax.random.PRNGKey(config.seed), model, tx, run.image_shape,
                                                 init_from=config.init_from))
    return [Contender(name, flat, state, measure_step_seconds(state, step, run, config.calibration_steps, clock))
            for name, (flat, state) in states.items()]


def train(contender: Contender, num_steps: int, config: ml_collections.ConfigDict, run: setup.Setup, step,
          workdir: pathlib.Path, clock: Clock) -> StepTimes:
    """Train `contender` for `num_steps` steps in `workdir` (its optimizer's schedule over them), with
    about `config.evaluations` test evaluations, each recording the training seconds so far."""
    flat = ml_collections.ConfigDict(contender.config.to_dict() | {
        "num_steps": num_steps, "eval_every": max(1, num_steps // config.evaluations)})
    tx = optimizer.create_optimizer(flat, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    state = contender.state.replace(tx=tx, opt_state=tx.init(contender.state.params))
    timed = TimedDataParallel.of(run.data_parallel, clock)
    predict = functools.partial(supervised.predict, apply_fn=state.apply_fn)

    def evaluate_test(state, step):
        del step
        logits = evaluate.map_over_batches(run.data_parallel, predict, state.variables, run.test.images,
                                           config.batch_size)
        return evaluate.classification_metrics(logits, run.test.labels) | {"seconds": timed.times.training_seconds}

    loop.fit(flat, workdir, state=state, per_device_step=step, batches=run.batches, data_parallel=timed,
             num_steps=num_steps, evaluate=evaluate_test)
    return timed.times


def evaluations(workdir: pathlib.Path) -> list[dict]:
    """The test evaluations of one model's run: `{"step", "seconds", "accuracy", "loss", ...}`."""
    return [record for record in read_metrics(workdir) if record["split"] == "eval"]


def plot(runs: dict[str, pathlib.Path], labels: dict[str, str], path: pathlib.Path, title: str) -> pathlib.Path:
    """Test accuracy of every model against its training seconds (left) and against the step (right)."""
    fig, axes = report.figure(1, 2, panel_size=(5.5, 4.2))
    for name, workdir in runs.items():
        records = evaluations(workdir)
        accuracy = [record["accuracy"] for record in records]
        for axis, x_key in zip(axes[0], ("seconds", "step")):
            axis.plot([record[x_key] for record in records], accuracy, marker="o", markersize=3, label=labels[name])
    for axis, x_label in zip(axes[0], ("training seconds (compiled steps, compilation excluded)", "step")):
        axis.set_xlabel(x_label)
        axis.set_ylabel("test accuracy")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return report.save(fig, path, title=title)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *, clock: Clock = time.perf_counter) -> dict:
    """Run the comparison; `clock` (seconds, monotonic) times the steps: `time.perf_counter`, or a
    fake one in tests."""
    check_comparison(config, workdir)
    run = setup.setup(config)
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    step = functools.partial(supervised.train_step, settings=settings)
    contenders = prepare(config, run, step, clock)
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    steps_per_epoch = run.batches.steps_per_epoch
    budget = config.time_budget_seconds
    budget_from = "time_budget_seconds" if budget is not None else f"{MODELS[0]} {config.epochs} epochs"
    rows, runs = [], {}
    for contender in contenders:
        num_steps = config.epochs * steps_per_epoch if budget is None else planned_steps(budget, contender.seconds_per_step)
        runs[contender.name] = pathlib.Path(workdir) / contender.name
        times = train(contender, num_steps, config, run, step, runs[contender.name], clock)
        budget = times.training_seconds if budget is None else budget
        test = evaluations(runs[contender.name])[-1]
        rows.append({"model": contender.name, "architecture": contender.config.model,
                     "parameters": parameter_total(contender.state.params), "steps": num_steps,
                     "epochs": num_steps / steps_per_epoch, "seconds per step": contender.seconds_per_step,
                     "training seconds": times.training_seconds,
                     "seconds / budget": times.training_seconds / budget,
                     "compile seconds": times.compile_seconds, "test accuracy": test["accuracy"],
                     "test loss": test["loss"]})
    title = f"{' vs '.join(MODELS)} on {run.spec.name}, equal training time ({budget:.4g} s from {budget_from})"
    table = report.Table(title, list(rows[0]), [list(row.values()) for row in rows])
    labels = {row["model"]: f"{row['model']} ({row['architecture']}, {row['steps']} steps)" for row in rows}
    plots = [plot(runs, labels, pathlib.Path(workdir) / "curves.png", title)]
    return report.finish(workdir, table, plots=plots, summary={
        "budget_seconds": budget, "budget_from": budget_from, "steps_per_epoch": steps_per_epoch,
        "test_accuracy": {row["model"]: row["test accuracy"] for row in rows}})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
