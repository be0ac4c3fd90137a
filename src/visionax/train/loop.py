"""The training loop shared by every experiment.

`fit` locks the workdir for the run, resumes from the latest checkpoint in it (a "resume" record
in metrics.jsonl and a line on stdout say from which step), runs the compiled per-device step over the
device mesh, logs metrics (metrics.jsonl, TensorBoard, a progress bar with step rate and ETA), saves
checkpoints periodically and at the end, and stops at a NaN/Inf loss keeping the last good checkpoint.
With an early-stopping rule (`visionax.train.early_stopping`) it also stops when the evaluations say so
and returns the state of the best one; an evaluation comes before the checkpoint of the same step.
Because the state carries its rng and batch `s` is a pure function of `(seed, s)`, a run killed at any
moment and started again ends with exactly the parameters of an uninterrupted run. The batches reach
the step from the host, or with `config.data.on_device` are gathered on the devices (`feed`).
"""

from __future__ import annotations

import math
import pathlib
import sys
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax.errors import UserError
from visionax.parallel import DataParallel, Step
from visionax.train import checkpoint, early_stopping, feed
from visionax.train.metrics import MetricWriter
from visionax.train.state import TrainState

Evaluate = Callable[[TrainState, int], Mapping[str, float]]


class NonFiniteLossError(UserError):
    """The loss became NaN or Inf; training stopped and the last good checkpoint was kept."""


@jax.jit
def all_finite(tree) -> jax.Array:
    """Whether every entry of every leaf of `tree` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def _mean_metrics(history: list[Mapping[str, jax.Array]], data_parallel: DataParallel) -> dict[str, float]:
    fetched = jax.device_get([data_parallel.get_state(metrics) for metrics in history])
    return {name: float(np.mean([metrics[name] for metrics in fetched])) for name in fetched[0]}


def fit(
    config: ml_collections.ConfigDict,
    workdir: str | pathlib.Path,
    *,
    state: TrainState,
    per_device_step: Step,
    batches: Any,
    data_parallel: DataParallel,
    num_steps: int,
    evaluate: Evaluate | None = None,
    stopping: early_stopping.Rule | None = None,
) -> TrainState:
    """Train `state` to `num_steps` steps; returns the final state (no device axis).

    Reads `config.log_every`, `config.checkpoint_every`, `config.keep_checkpoints` and
    `config.eval_every` (0: evaluate only at the end). With `stopping`, training stops early when
    the rule says so after an evaluation, and the state returned is the best evaluation's.
    """
    if stopping is not None and evaluate is None:
        raise ValueError("early stopping needs an evaluate function")
    workdir = pathlib.Path(workdir)
    batch_feed = feed.feed(config, batches, data_parallel)
    checkpoint.claim_workdir(workdir, config, write=False)  # another config: refused before anything is touched
    with checkpoint.WorkdirLock(workdir):
        checkpoint.claim_workdir(workdir, config)
        return _fit(config, workdir, state, per_device_step, batch_feed, data_parallel, num_steps, evaluate, stopping)


def _fit(config, workdir, state, per_device_step, batch_feed, data_parallel, num_steps, evaluate, stopping
         ) -> TrainState:
    is_primary = jax.process_index() == 0
    checkpoints = checkpoint.manager(workdir, keep=config.keep_checkpoints, every=config.checkpoint_every)
    state = checkpoint.restore_latest(checkpoints, state)
    start = int(state.step)
    stopper = early_stopping.EarlyStopping(stopping, workdir, start) if stopping is not None else None
    writer = MetricWriter(workdir, start_step=start, total_steps=num_steps, enabled=is_primary)
    if start:
        writer.write(start, "resume", {})
        if is_primary:
            print(f"resumed from step {start} ({workdir})")
    step_function = batch_feed.step(per_device_step)
    device_state = data_parallel.put_state(state)
    history = []
    try:
        for step in range(start, num_steps):
            if stopper is not None and stopper.progress.stopped:
                break
            device_state, metrics = step_function(device_state, step)
            history.append(metrics)
            done = step + 1
            saving = done % config.checkpoint_every == 0
            if done % config.log_every == 0 or done == num_steps or saving:
                values = _mean_metrics(history, data_parallel)
                writer.advance(len(history))
                history = []
                if not all(math.isfinite(value) for value in values.values()):
                    raise _non_finite(values, done, checkpoints, workdir)
                writer.write(done, "train", values)
            if evaluate and config.eval_every and done % config.eval_every == 0 and done != num_steps:
                _evaluate(evaluate, data_parallel.get_state(device_state), done, writer, stopper)
            if saving:
                host_state = data_parallel.get_state(device_state)
                if not bool(all_finite(host_state.params)):
                    raise _non_finite({"params": float("nan")}, done, checkpoints, workdir)
                checkpoint.save(checkpoints, host_state)
        state = data_parallel.get_state(device_state)
        if checkpoints.latest_step() != int(state.step):
            checkpoint.save(checkpoints, state, force=True)
        if evaluate and not (stopper is not None and stopper.progress.stopped):
            _evaluate(evaluate, state, int(state.step), writer, stopper)
        checkpoint.wait(checkpoints)
        if stopper is not None:
            state = stopper.best_state(state)
    finally:
        batch_feed.close()
        writer.close()
        if stopper is not None:
            stopper.close()
        try:
            checkpoints.close()
        except Exception:  # noqa: BLE001 - a failed save already being reported must not be masked
            if sys.exc_info()[0] is None:
                raise
    return state


def _evaluate(evaluate: Evaluate, state: TrainState, step: int, writer: MetricWriter,
              stopper: early_stopping.EarlyStopping | None) -> None:
    """Evaluate `state` (no device axis), write the record, and give it to the early stopping."""
    values = evaluate(state, step)
    writer.write(step, "eval", values)
    if stopper is None:
        return
    progress = stopper.record(step, values, state)
    if progress.stopped:
        best = {} if progress.best is None else {"best_step": progress.best_step, stopper.rule.metric: progress.best}
        writer.write(step, "early_stop", best)
        if jax.process_index() == 0:
            print(f"early stopping at step {step}: {stopper.rule.metric} has not improved for {progress.waited} "
                  f"evaluation(s); best {best or 'none (no finite value)'}")


def _non_finite(values, step, checkpoints, workdir) -> NonFiniteLossError:
    checkpoint.wait(checkpoints)
    last = checkpoints.latest_step()
    kept = f"the last good checkpoint (step {last}) is kept in {workdir}" if last is not None else "no checkpoint was saved"
    shown = ", ".join(f"{name}={value}" for name, value in values.items())
    return NonFiniteLossError(
        f"non-finite training metrics at step {step} ({shown}); lower --config.learning_rate or check "
        f"the data, then rerun with a new --workdir; {kept}"
    )
