"""The shared training loop: exact resume (in process, after kill -9, after a kill during a save),
the batches a resumed run reads, NaN stops, faults in checkpoints, one run per workdir, and the
metrics and checkpoints on disk."""

import dataclasses
import errno
import json
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from experiments import classify
from visionax import cli, parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.errors import UserError
from visionax.train import checkpoint, loop
from visionax.train.metrics import read_metrics
from visionax.train.state import TrainState

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


ROOT = pathlib.Path(__file__).resolve().parents[2]


def loop_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2, "eval_every": 3, "seed": 0}
    )
    config.update(overrides)
    return config


@dataclasses.dataclass(frozen=True)
class RecordingBatches(Batches):
    """Batches that remember which global batches were read."""

    read: list = dataclasses.field(default_factory=list, compare=False)

    def host_batch(self, step):
        self.read.append(step)
        return super().host_batch(step)


def linear_regression_setup(nan_from_step: int | None = None, nan_params_from_step: int | None = None):
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (64, 2, 2, 1), dtype=np.uint8)
    source = ArraySource(images, (images.reshape(64, -1).sum(1) % 3).astype(np.int32))

    def per_device_step(state, batch):
        x = batch["image"].reshape(batch["image"].shape[0], -1).astype(jnp.float32) / 255.0
        y = batch["label"].astype(jnp.float32)

        def loss_function(params):
            return jnp.mean((x @ params["w"] - y) ** 2)

        loss, grads = jax.value_and_grad(loss_function)(state.params)
        grads = jax.lax.pmean(grads, parallel.DATA_AXIS)
        loss = jax.lax.pmean(loss, parallel.DATA_AXIS)
        if nan_from_step is not None:
            loss = jnp.where(state.step + 1 >= nan_from_step, jnp.nan, loss)
        new_state = state.apply_gradients(grads)
        if nan_params_from_step is not None:  # a parameter breaks while the loss looks fine
            broken = jnp.where(new_state.step >= nan_params_from_step, jnp.nan, new_state.params["unused"])
            new_state = new_state.replace(params={**new_state.params, "unused": broken})
        return new_state, {"loss": loss}

    tx = optax.sgd(0.1)
    params = {"w": jnp.zeros(4), "unused": jnp.zeros(())}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                       rng=jax.random.PRNGKey(0), apply_fn=None, tx=tx)
    return state, per_device_step, RecordingBatches(source, 16, seed=0)


def test_metrics_checkpoints_and_evaluation_are_written(tmp_path):
    state, step, batches = linear_regression_setup()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    evaluations = []

    def evaluate(state, step):
        evaluations.append(step)
        return {"norm": float(jnp.linalg.norm(state.params["w"]))}

    final = loop.fit(loop_config(), tmp_path, state=state, per_device_step=step, batches=batches,
                     data_parallel=data_parallel, num_steps=7, evaluate=evaluate)
    records = read_metrics(tmp_path)
    train = [record for record in records if record["split"] == "train"]
    assert [record["step"] for record in train] == list(range(1, 8))
    assert train[-1]["loss"] < train[0]["loss"]
    assert evaluations == [3, 6, 7]
    assert [r["step"] for r in records if r["split"] == "eval"] == [3, 6, 7]
    np.testing.assert_allclose(records[-1]["norm"], float(jnp.linalg.norm(final.params["w"])), rtol=1e-6)
    assert json.loads((tmp_path / "config.json").read_text())["checkpoint_every"] == 2
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    kept = sorted(int(path.name) for path in (tmp_path / "checkpoints").iterdir() if path.name.isdigit())
    assert kept == [6, 7]  # keep the last 2, the final one forced


def fit(workdir, num_steps, setup=None, **config_changes):
    state, step, batches = setup or linear_regression_setup()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    final = loop.fit(loop_config(**config_changes), workdir, state=state, per_device_step=step, batches=batches,
                     data_parallel=data_parallel, num_steps=num_steps)
    return final, batches.read


def test_resume_reads_only_the_batches_after_the_checkpoint(tmp_path, capsys):
    straight, read = fit(tmp_path / "a", 9)
    assert read == list(range(9))
    _, read = fit(tmp_path / "b", 5)  # checkpoints at 2, 4 and the final 5
    assert read == list(range(5))
    capsys.readouterr()
    resumed, read = fit(tmp_path / "b", 9)
    assert read == [5, 6, 7, 8]  # only the batches after step 5, in order
    assert f"resumed from step 5 ({tmp_path / 'b'})" in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(straight.params["w"]))
    records = read_metrics(tmp_path / "b")
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 10))
    assert [r["step"] for r in records if r["split"] == "resume"] == [5]


def test_keep_checkpoints_holds_across_a_resume(tmp_path):
    fit(tmp_path, 5, keep_checkpoints=2)
    fit(tmp_path, 11, keep_checkpoints=2)
    kept = sorted(int(path.name) for path in (tmp_path / "checkpoints").iterdir() if path.name.isdigit())
    assert kept == [10, 11]


def test_a_kill_during_a_save_resumes_from_the_previous_checkpoint(tmp_path):
    """kill -9 while orbax writes step 6 leaves only its temporary directory: the run resumes from
    step 4, reads batches 4 on, and ends with the uninterrupted run's parameters."""
    straight, _ = fit(tmp_path / "straight", 8)
    fit(tmp_path / "killed", 4)
    leftover = tmp_path / "killed" / "checkpoints" / "6.orbax-checkpoint-tmp-1764000000000000"
    (leftover / "default").mkdir(parents=True)
    (leftover / "default" / "half_written").write_bytes(b"\x00" * 10)
    resumed, read = fit(tmp_path / "killed", 8)
    assert read == [4, 5, 6, 7]
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(straight.params["w"]))


def corrupt(checkpoint_dir: pathlib.Path) -> None:
    """Truncate every file of a checkpoint to 5 bytes (a copy cut short)."""
    for path in checkpoint_dir.rglob("*"):
        if path.is_file() and path.stat().st_size > 5:
            path.write_bytes(path.read_bytes()[:5])


def test_a_truncated_latest_checkpoint_resumes_from_the_previous_one(tmp_path, capsys):
    straight, _ = fit(tmp_path / "straight", 8)
    fit(tmp_path / "run", 6)
    corrupt(tmp_path / "run" / "checkpoints" / "6")
    capsys.readouterr()
    resumed, read = fit(tmp_path / "run", 8)
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "unreadable checkpoint step 6" in warnings[0] and "resuming from step 4" in warnings[0]
    assert read == [4, 5, 6, 7]
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(straight.params["w"]))
    assert (tmp_path / "run" / "checkpoints" / "6.unreadable").is_dir()  # set aside, not deleted


def test_no_readable_checkpoint_is_a_user_error(tmp_path):
    fit(tmp_path, 4, keep_checkpoints=1)
    corrupt(tmp_path / "checkpoints" / "4")
    with pytest.raises(UserError, match="no readable checkpoint in .*pass a new --workdir"):
        fit(tmp_path, 8)


def test_a_failed_write_is_a_user_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):
        if step >= 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    with pytest.raises(UserError, match=r"could not write the checkpoint of step 4 .*\(No space left on device\); "
                                        r"free disk space .*last complete checkpoint \(step 2\) is kept"):
        fit(tmp_path, 8)
    monkeypatch.undo()
    restored = ocp.CheckpointManager((tmp_path / "checkpoints").absolute()).restore(2)
    assert np.all(np.isfinite(restored["params"]["w"]))
    resumed, read = fit(tmp_path, 8)  # after freeing space, the same command resumes from step 2
    assert read == list(range(2, 8))


def test_a_second_run_on_the_same_workdir_stops_with_one_line(tmp_path):
    with checkpoint.WorkdirLock(tmp_path):
        with pytest.raises(UserError, match=r"is in use by a run still going \(pid \d+\); wait for it"):
            fit(tmp_path, 4)
    assert not (tmp_path / "checkpoints").exists()
    fit(tmp_path, 4)  # released


def test_non_finite_parameters_at_a_checkpoint_stop_the_run(tmp_path):
    setup = linear_regression_setup(nan_params_from_step=3)
    with pytest.raises(loop.NonFiniteLossError, match=r"step 4 \(params=nan\).*last good checkpoint \(step 2\)"):
        fit(tmp_path, 10, setup=setup, log_every=100)
    kept = sorted(int(path.name) for path in (tmp_path / "checkpoints").iterdir() if path.name.isdigit())
    assert kept == [2]


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    state, step, batches = linear_regression_setup(nan_from_step=6)
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "pmap")
    with pytest.raises(loop.NonFiniteLossError, match=r"step 6 \(loss=nan\).*last good checkpoint \(step 4\)"):
        loop.fit(loop_config(), tmp_path, state=state, per_device_step=step, batches=batches,
                 data_parallel=data_parallel, num_steps=10)
    kept = sorted(int(path.name) for path in (tmp_path / "checkpoints").iterdir() if path.name.isdigit())
    assert kept == [2, 4]
    restored = ocp.CheckpointManager((tmp_path / "checkpoints").absolute()).restore(4)
    assert np.all(np.isfinite(restored["params"]["w"]))


def final_params(workdir: pathlib.Path) -> dict:
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    return jax.tree.map(np.asarray, manager.restore(manager.latest_step())["params"])


def test_kill_9_and_restart_resumes_from_the_last_checkpoint_and_ends_with_the_uninterrupted_parameters(
        tmp_path, digits_dir, capsys):
    """A real run killed with SIGKILL after its checkpoint of step 6, started again with the same
    flags: it says it resumed from step 6, logs only the steps after it, and ends bit-identical to
    the run that was never interrupted. The restart and the uninterrupted run go through the
    command line's `cli.run` in this process (the same 8 devices); only the killed run needs one."""
    flags = ["--config.epochs=2", "--config.checkpoint_every=3", "--config.log_every=1", "--config.eval_every=0",
             f"--config.data.data_dir={digits_dir}"]
    command = [sys.executable, "-m", "experiments.classify", *flags]

    def run_in_process(workdir):
        cli.run(classify.train_and_evaluate, ROOT / "experiments" / "configs" / "classify.py", "classify",
                argv=["classify", *flags, f"--workdir={workdir}"])

    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen(command + [f"--workdir={interrupted}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (interrupted / "checkpoints" / "6").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = max(int(path.name) for path in (interrupted / "checkpoints").iterdir() if path.name.isdigit())
    assert latest < 22
    capsys.readouterr()
    run_in_process(interrupted)
    assert f"resumed from step {latest} ({interrupted})" in capsys.readouterr().out
    records = read_metrics(interrupted)
    assert [r["step"] for r in records if r["split"] == "resume"] == [latest]
    assert [r["step"] for r in records if r["split"] == "train"] == list(range(1, 23))
    run_in_process(tmp_path / "straight")
    straight, resumed = final_params(tmp_path / "straight"), final_params(interrupted)
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
