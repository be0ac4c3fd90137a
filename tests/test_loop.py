"""The shared training loop: exact resume after kill -9, NaN stop, metrics and checkpoints on disk."""

import json
import os
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

from visionax import parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.train import loop
from visionax.train.metrics import read_metrics
from visionax.train.state import TrainState

ROOT = pathlib.Path(__file__).resolve().parents[1]


def loop_config(**overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2, "eval_every": 3, "seed": 0}
    )
    config.update(overrides)
    return config


def linear_regression_setup(nan_from_step: int | None = None):
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
        return state.apply_gradients(grads), {"loss": loss}

    state = TrainState.create(
        apply_fn=None, variables={"params": {"w": jnp.zeros(4)}}, tx=optax.sgd(0.1), rng=jax.random.PRNGKey(0)
    )
    return state, per_device_step, Batches(source, 16, seed=0)


def test_metrics_checkpoints_and_evaluation_are_written(tmp_path):
    state, step, batches = linear_regression_setup()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    evaluations = []

    def evaluate(state, step):
        evaluations.append(step)
        return {"norm": float(jnp.linalg.norm(state.params["w"]))}

    final = loop.fit(loop_config(), tmp_path, state=state, per_device_step=step, batches=batches,
                     parallel=data_parallel, num_steps=7, evaluate=evaluate)
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


def test_resume_continues_where_it_stopped(tmp_path):
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    state, step, batches = linear_regression_setup()
    straight = loop.fit(loop_config(), tmp_path / "a", state=state, per_device_step=step, batches=batches,
                        parallel=data_parallel, num_steps=9)
    loop.fit(loop_config(), tmp_path / "b", state=state, per_device_step=step, batches=batches,
             parallel=data_parallel, num_steps=4)
    resumed = loop.fit(loop_config(), tmp_path / "b", state=state, per_device_step=step, batches=batches,
                       parallel=data_parallel, num_steps=9)
    np.testing.assert_array_equal(np.asarray(resumed.params["w"]), np.asarray(straight.params["w"]))
    assert [r["step"] for r in read_metrics(tmp_path / "b") if r["split"] == "train"] == list(range(1, 10))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    state, step, batches = linear_regression_setup(nan_from_step=6)
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "pmap")
    with pytest.raises(loop.NonFiniteLossError, match=r"step 6 \(loss=nan\).*last good checkpoint \(step 4\)"):
        loop.fit(loop_config(), tmp_path, state=state, per_device_step=step, batches=batches,
                 parallel=data_parallel, num_steps=10)
    kept = sorted(int(path.name) for path in (tmp_path / "checkpoints").iterdir() if path.name.isdigit())
    assert kept == [2, 4]
    restored = ocp.CheckpointManager((tmp_path / "checkpoints").absolute()).restore(4)
    assert np.all(np.isfinite(restored["params"]["w"]))


def final_params(workdir: pathlib.Path) -> dict:
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    return jax.tree.map(np.asarray, manager.restore(manager.latest_step())["params"])


def test_kill_9_and_restart_ends_with_the_uninterrupted_parameters(tmp_path, digits_dir):
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    command = [sys.executable, "-m", "experiments.classify", "--config.epochs=2", "--config.checkpoint_every=3",
               "--config.log_every=1", f"--config.data.data_dir={digits_dir}"]

    def launch(workdir):
        return subprocess.Popen(command + [f"--workdir={workdir}"], cwd=ROOT, env=environment,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    assert launch(tmp_path / "straight").wait(timeout=300) == 0
    interrupted = tmp_path / "interrupted"
    process = launch(interrupted)
    deadline = time.time() + 300
    while not (interrupted / "checkpoints" / "6").exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "checkpoints" / "22").exists()
    assert launch(interrupted).wait(timeout=300) == 0
    straight, resumed = final_params(tmp_path / "straight"), final_params(interrupted)
    jax.tree.map(np.testing.assert_array_equal, resumed, straight)
