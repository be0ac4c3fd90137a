"""Early stopping: the rule on scripted metric sequences (patience, min_delta, both modes); in the
training loop, the step it stops at, the best checkpoint beside the kept latest ones, the best
parameters returned, and a run interrupted and restarted that stops where the uninterrupted one did."""

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from visionax import parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.errors import UserError
from visionax.train import checkpoint, early_stopping, loop
from visionax.train.metrics import read_metrics
from visionax.train.state import TrainState

Rule = early_stopping.Rule


@pytest.mark.parametrize("rule, values, stop_step, best, best_step", [
    # the first value improves; 0.6 at step 3 equals the best: no improvement; two in a row stop
    (Rule("accuracy", "max", patience=2), [0.5, 0.6, 0.6, 0.55, 0.9], 4, 0.6, 2),
    # min_delta 0.05: 0.54 is not > 0.5 + 0.05; 0.56 is (counter back to 0); 0.6 and 0.61 are not > 0.61
    (Rule("accuracy", "max", patience=3, min_delta=0.05), [0.5, 0.54, 0.56, 0.6, 0.61, 0.6, 0.9], 6, 0.56, 3),
    (Rule("loss", "min", patience=2), [1.0, 0.9, 0.95, 0.85, 0.86, 0.87, 0.1], 6, 0.85, 4),
    (Rule("loss", "min", patience=2, min_delta=0.1), [1.0, 0.95, 0.92, 0.8], 3, 1.0, 1),  # 0.92 is not < 0.9
    # NaN never improves; with patience 2 it counts, the next finite value resets the counter
    (Rule("loss", "min", patience=2), [math.nan, 0.3, math.nan, 0.2, 0.25, 0.3], 6, 0.2, 4),
    (Rule("loss", "min", patience=5), [0.3, 0.2, 0.1], None, 0.1, 3),
])
def test_the_rule_stops_where_it_says(rule, values, stop_step, best, best_step):
    progress, stopped_at = early_stopping.Progress(), None
    for step, value in enumerate(values, start=1):
        progress = early_stopping.advance(rule, progress, step, value)
        if progress.stopped:
            stopped_at = step
            break
    assert stopped_at == stop_step
    assert (progress.best, progress.best_step) == (best, best_step)
    assert early_stopping.progress(rule, list(enumerate(values, start=1))[:stop_step or len(values)]) == progress


@pytest.mark.parametrize("changes, message", [
    ({"patience": -1}, "early_stopping.patience=-1 must be an integer >= 0"),
    ({"mode": "highest"}, "early_stopping.mode='highest' must be max"),
    ({"metric": "accuracy"}, "unknown early_stopping.metric 'accuracy'; choose one of validation_accuracy, "
     "validation_loss"),
    ({"min_delta": -0.1}, "early_stopping.min_delta=-0.1 must be >= 0"),
    ({"eval_every": 0}, "early stopping reads the evaluations every eval_every steps, not 0"),
])
def test_bad_settings_are_one_line(changes, message):
    config = ml_collections.ConfigDict({"eval_every": 10, "early_stopping": {
        "metric": "validation_accuracy", "mode": "max", "patience": 3, "min_delta": 0.0}})
    if "eval_every" in changes:
        config.eval_every = changes.pop("eval_every")
    config.early_stopping.update(changes)
    with pytest.raises(UserError, match=message):
        Rule.from_config(config, ("validation_accuracy", "validation_loss"))


def test_patience_zero_is_off():
    config = ml_collections.ConfigDict({"eval_every": 0, "early_stopping": {
        "metric": "anything", "mode": "max", "patience": 0, "min_delta": 0.0}})
    assert Rule.from_config(config, ()) is None


# validation accuracy at each step (evaluated every step): best 0.7 at step 5; 6 and 7 do not
# improve, so patience 3 stops at step 8 of 12
SCRIPT = {1: 0.5, 2: 0.6, 3: 0.6, 4: 0.62, 5: 0.7, 6: 0.6, 7: 0.65, 8: 0.69, 9: 0.99, 10: 0.99, 11: 0.99, 12: 0.99}
STOP, BEST = 8, 5


class Interrupted(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class ScriptedBatches(Batches):
    """Batches that remember the steps read and raise once at `interrupt_at`."""

    read: list = dataclasses.field(default_factory=list, compare=False)
    interrupt_at: list = dataclasses.field(default_factory=list, compare=False)

    def host_batch(self, step):
        if step in self.interrupt_at:
            self.interrupt_at.clear()
            raise Interrupted
        self.read.append(step)
        return super().host_batch(step)


def regression_state():
    tx = optax.sgd(0.1)
    params = {"w": jnp.zeros(4)}
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                      rng=jax.random.PRNGKey(0), apply_fn=None, tx=tx)


def regression_step(state, batch):
    x = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0
    loss, grads = jax.value_and_grad(lambda params: jnp.mean((x @ params["w"] - batch["label"]) ** 2))(state.params)
    return state.apply_gradients(jax.lax.pmean(grads, parallel.DATA_AXIS)), {"loss": jax.lax.pmean(loss, "data")}


def fit(workdir, interrupt_at=None, **changes):
    """The loop with the scripted validation accuracy; returns (final state, params seen at each
    evaluation, batches read)."""
    images = np.random.default_rng(0).integers(0, 256, (64, 2, 2, 1), dtype=np.uint8)
    data = ScriptedBatches(ArraySource(images, (images.reshape(64, -1).sum(1) % 3).astype(np.int32)), 16, seed=0,
                           interrupt_at=[] if interrupt_at is None else [interrupt_at])
    seen = {}

    def evaluate(state, step):
        seen[step] = np.asarray(state.params["w"])
        return {"validation_accuracy": SCRIPT[step], "norm": float(jnp.linalg.norm(state.params["w"]))}

    config = ml_collections.ConfigDict({"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2,
                                        "eval_every": 1, "seed": 0, **changes})
    final = loop.fit(config, workdir, state=regression_state(), per_device_step=regression_step, batches=data,
                     data_parallel=parallel.DataParallel(parallel.make_mesh(), "shard_map"), num_steps=12,
                     evaluate=evaluate, stopping=Rule("validation_accuracy", "max", patience=3))
    return final, seen, data.read


def steps_in(directory):
    return sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit())


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    return workdir, *fit(workdir)


def test_stops_at_the_rule_s_step_and_returns_the_best_parameters(uninterrupted):
    workdir, final, seen, read = uninterrupted
    assert read == list(range(STOP))
    records = read_metrics(workdir)
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, STOP + 1))
    assert [r["step"] for r in records if r["split"] == "eval"] == list(range(1, STOP + 1))
    assert [r for r in records if r["split"] == "early_stop"] == [
        {"step": STOP, "split": "early_stop", "best_step": BEST, "validation_accuracy": 0.7}]
    assert int(final.step) == BEST
    np.testing.assert_array_equal(final.params["w"], seen[BEST])
    assert not np.array_equal(seen[BEST], seen[STOP])
    assert steps_in(workdir / "best_checkpoint") == [BEST]
    assert steps_in(workdir / "checkpoints") == [STOP - 2, STOP]  # keep_checkpoints=2: the latest ones
    assert early_stopping.read_evaluations(workdir) == [(step, SCRIPT[step]) for step in range(1, STOP + 1)]
    assert json.loads((workdir / "early_stopping.json").read_text())["metric"] == "validation_accuracy"


def test_a_stopped_run_started_again_trains_nothing(uninterrupted, tmp_path):
    workdir, final, _, _ = uninterrupted
    again, _, read = fit(workdir)
    assert read == []
    np.testing.assert_array_equal(again.params["w"], final.params["w"])
    assert early_stopping.read_evaluations(workdir) == [(step, SCRIPT[step]) for step in range(1, STOP + 1)]


@pytest.mark.parametrize("interrupt_at", [5, 7])
def test_a_restarted_run_keeps_the_counter_and_the_best_and_stops_at_the_same_step(uninterrupted, tmp_path,
                                                                                     interrupt_at):
    """Interrupted before batch 5 (evaluations 1..5 stored, the best checkpoint 5 is newer than the
    latest checkpoint 4: both are dropped and redone) or batch 7 (resumed from step 6 with the
    counter at 1: with the counter lost it would not stop before step 12)."""
    workdir, final, seen, _ = uninterrupted
    with pytest.raises(Interrupted):
        fit(tmp_path, interrupt_at=interrupt_at)
    assert early_stopping.read_evaluations(tmp_path)[-1][0] == interrupt_at
    resumed, _, read = fit(tmp_path)
    checkpoint_step = interrupt_at // 2 * 2
    assert read == list(range(checkpoint_step, STOP))
    np.testing.assert_array_equal(resumed.params["w"], final.params["w"])
    assert early_stopping.read_evaluations(tmp_path) == early_stopping.read_evaluations(workdir)
    assert steps_in(tmp_path / "best_checkpoint") == [BEST]
    latest = checkpoint.load_variables(tmp_path)[0]["params"]["w"]
    np.testing.assert_array_equal(latest, seen[STOP])
