"""`python -m experiments.ensemble` end to end: the table's every number recomputed in NumPy float64
from the checkpoints it was made from, the shipped ensemble step on 8 devices against 1, a run
stopped half-way resumed exactly, bad input stopped with one line."""

import json

import chex
import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import ensemble as experiment
from experiments.configs.ensemble import get_config
from tests.experiments.checks import Interrupted, assert_command_line_error, interrupt_batches
from visionax import models, parallel
from visionax.data.preprocess import model_input
from visionax.train import checkpoint, setup

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def tiny(digits_dir, **changes):
    """3 members of a width-(4, 8) small CNN, 2 epochs of 64 digits (44 steps), 2 snapshot cycles."""
    config = get_config()
    config.data.data_dir = digits_dir
    config.model_options = ml_collections.ConfigDict({"widths": (4, 8)})
    config.members, config.ensemble_sizes, config.snapshot_cycles = 3, "2,3", 2
    config.batch_size, config.epochs, config.log_every, config.checkpoint_every = 64, 2, 11, 20
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("ensemble")
    return experiment.train_and_evaluate(tiny(digits_dir), str(workdir)), workdir


def saved(directory, step=None):
    """The raw pytree of a checkpoint (the newest by default), as saved."""
    with ocp.CheckpointManager((directory / "checkpoints").absolute()) as manager:
        return manager.restore(manager.latest_step() if step is None else step)


def numpy_log_probabilities(params, batch_stats, images):
    """log softmax of the logits of each stacked model `[models, n, classes]`, in float64."""
    model = models.get_model("small_cnn", num_classes=10, widths=(4, 8))
    inputs = model_input(images)
    logits = np.stack([np.asarray(model.apply({"params": jax.tree.map(lambda leaf: leaf[index], params),
                                               "batch_stats": jax.tree.map(lambda leaf: leaf[index], batch_stats)},
                                              inputs, train=False), np.float64)
                       for index in range(len(jax.tree.leaves(params)[0]))])
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def scores(log_probabilities, labels):
    """(accuracy, NLL) of the mean of the models' probabilities."""
    p = np.exp(log_probabilities).mean(0)
    return np.mean(p.argmax(1) == labels), -np.mean(np.log(p[np.arange(len(labels)), labels]))


def test_every_row_equals_a_float64_computation_from_the_checkpoints(trained, digits_dir):
    """Single model (alone; mean and std over the members), ensembles of the first 2 and 3, the
    snapshot ensemble of the checkpoints at steps 22 and 44 and its last, the members' Polyak
    averages; results.json holds the printed table; an ensemble's NLL is at most its members' mean
    (−log of a mean probability <= the mean of −log)."""
    results, workdir = trained
    assert json.loads((workdir / "results.json").read_text()) == results
    assert (workdir / "ensemble.png").stat().st_size > 0
    test = setup.setup(tiny(digits_dir)).test
    labels = test.labels
    rows = {row["model"]: row for row in results["rows"]}
    members = saved(workdir / "members")
    assert int(members["step"][0]) == 44 and members["step"].shape == (3,)
    log_p = numpy_log_probabilities(members["params"], members["batch_stats"], test.images)
    each = [scores(log_p[index:index + 1], labels) for index in range(3)]
    single = rows["single model: mean of the 3 members"]
    assert single["test accuracy"] == pytest.approx(np.mean([accuracy for accuracy, _ in each]), abs=1e-12)
    assert single["test NLL"] == pytest.approx(np.mean([nll for _, nll in each]), rel=1e-5)
    assert single["NLL std"] == pytest.approx(np.std([nll for _, nll in each]), rel=1e-3)
    for size in (2, 3):
        row = rows[f"ensemble of members 0–{size - 1}"]
        accuracy, nll = scores(log_p[:size], labels)
        assert row["test accuracy"] == pytest.approx(accuracy, abs=1e-12) and row["members"] == size
        assert row["test NLL"] == pytest.approx(nll, rel=1e-5)
        assert row["test NLL"] <= np.mean([nll for _, nll in each[:size]])
    polyak = numpy_log_probabilities(members["average"]["params"], members["batch_stats"], test.images)
    assert rows["Polyak average (decay 0.99): mean of the 3 members"]["test NLL"] == pytest.approx(
        np.mean([scores(polyak[index:index + 1], labels)[1] for index in range(3)]), rel=1e-5)
    lone = saved(workdir / "single")
    add_axis = lambda tree: jax.tree.map(lambda leaf: np.asarray(leaf)[None], tree)  # noqa: E731
    accuracy, nll = scores(numpy_log_probabilities(add_axis(lone["params"]), add_axis(lone["batch_stats"]),
                                                   test.images), labels)
    assert rows["single model: member 0 trained alone"]["test NLL"] == pytest.approx(nll, rel=1e-5)
    assert results["snapshot_steps"] == [22, 44]
    snapshots = [saved(workdir / "snapshot", step) for step in (22, 44)]
    stack = lambda key: jax.tree.map(lambda *leaves: np.stack(leaves), *(s[key] for s in snapshots))  # noqa: E731
    log_snapshots = numpy_log_probabilities(stack("params"), stack("batch_stats"), test.images)
    accuracy, nll = scores(log_snapshots, labels)
    row = rows["snapshot ensemble: 2 checkpoints of one run (cyclic cosine)"]
    assert row["test accuracy"] == pytest.approx(accuracy, abs=1e-12) and row["test NLL"] == pytest.approx(nll, rel=1e-5)
    assert rows["snapshot run: its last checkpoint alone"]["test NLL"] == pytest.approx(
        scores(log_snapshots[1:], labels)[1], rel=1e-5)
    assert results["members_seconds"] > 0 and results["single_seconds"] > 0


def test_the_shipped_step_on_8_devices_equals_1_device(digits_dir):
    """Two steps of the experiment's own ensemble (BatchNorm synchronised over the mesh) with one batch
    order: losses and every member's parameters, statistics and optimizer state agree."""
    config = tiny(digits_dir, members=2, independent_orders=False, batch_size=32)
    results = {}
    for devices in (1, 8):
        run = setup.setup(config)
        data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]))
        _, state, step = experiment.create(config, run)
        compiled, placed, losses = data_parallel.step(step, donate=False), data_parallel.put_state(state), []
        for index in range(2):
            placed, metrics = compiled(placed, data_parallel.put_batch(run.batches.host_batch(index)))
            losses.append([float(metrics[f"loss_{member}"]) for member in range(2)])
        results[devices] = np.asarray(losses), jax.device_get(placed.members)
    np.testing.assert_allclose(results[8][0], results[1][0], rtol=1e-5)
    assert results[1][0][1, 0] != results[1][0][0, 0] and results[1][0][0, 0] != results[1][0][0, 1]
    for field in ("params", "batch_stats", "opt_state", "average"):
        chex.assert_trees_all_close(getattr(results[8][1], field), getattr(results[1][1], field), rtol=2e-4, atol=2e-6)


def test_a_resumed_run_ends_as_the_uninterrupted_one(trained, tmp_path, digits_dir, monkeypatch, capsys):
    """Stopped before the members' step 30 (checkpoint at 20) and started again: the members resume
    from step 20 reading only batches 20..43 (each member its own order), the lone and snapshot
    runs then train, and all three end with the uninterrupted run's parameters and numbers."""
    straight, straight_workdir = trained
    steps_read = interrupt_batches(monkeypatch, 30)
    with pytest.raises(Interrupted):
        experiment.train_and_evaluate(tiny(digits_dir), str(tmp_path))
    assert checkpoint.load_variables(tmp_path / "members")[1] == 20
    steps_read.clear()
    capsys.readouterr()
    resumed = experiment.train_and_evaluate(tiny(digits_dir), str(tmp_path))
    assert f"resumed from step 20 ({tmp_path / 'members'})" in capsys.readouterr().out
    assert steps_read == [step for step in range(20, 44) for _ in range(3)] + list(range(44)) * 2
    for part in ("members", "single", "snapshot"):
        expected, actual = saved(straight_workdir / part), saved(tmp_path / part)
        chex.assert_trees_all_equal(actual["params"], expected["params"])
        chex.assert_trees_all_equal(actual["opt_state"], expected["opt_state"])
    for row, expected in zip(resumed["rows"], straight["rows"]):
        assert {**row, "training seconds": 0} == {**expected, "training seconds": 0}


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.members=0"], "members=0 must be >= 1"),
        (["--config.ensemble_sizes=2,9"], "ensemble_sizes='2,9' must be comma-separated counts from 1 to members=8"),
        (["--config.ensemble_sizes=two"], "ensemble_sizes='two' must be"),
        (["--config.snapshot_cycles=1000", "--config.epochs=1"], "snapshot_cycles=1000 exceeds the 11 training steps"),
        (["--config.optimizer=adamw"], "unknown optimizer 'adamw'"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, digits_dir, flags, message, capsys):
    assert_command_line_error(experiment, [f"--config.data.data_dir={digits_dir}", *flags], tmp_path / "run",
                              message, capsys)
