"""What the experiment tests share: a tiny version of an experiment's config, the shipped step run
on 1 or 8 devices and compared, and bad input stopping with a one-line UserError (exit status 2 on
the command line) before anything is written to the workdir."""

import json
import pathlib

import chex
import jax
import ml_collections
import numpy as np
import pytest

from experiments import self_supervised
from visionax import cli, parallel
from visionax.data.pipeline import Batches
from visionax.errors import UserError
from visionax.train import feed, setup
from visionax.train.metrics import read_metrics

# What self_supervised.finish writes for every self-supervised experiment: the table and the learned
# encoder's scores beside those of raw pixels and of the encoder it started from.
EVALUATION_KEYS = {"title", "columns", "rows", "knn_accuracy", "probe_accuracy", "pixel_knn_accuracy",
                   "random_knn_accuracy", "steps", "label_efficiency"}


def assert_representation_table(result: dict, workdir: pathlib.Path, title: str, extra_keys=frozenset()) -> None:
    """`result` is the results.json of `workdir`: self_supervised.finish's keys, a title starting
    with `title`, the rows (all, 10% and 1% of the labels) equal to the summary, a kNN accuracy above
    chance (0.3 on ten classes) and the two plots written; `extra_keys`: the method's own results."""
    results = json.loads((workdir / "results.json").read_text())
    assert results == result and set(results) == EVALUATION_KEYS | set(extra_keys)
    assert results["title"].startswith(title), results["title"]
    rows = {row["features"]: row for row in results["rows"]}
    assert set(rows) == {"raw pixels", "random encoder", "learned encoder"}
    assert rows["learned encoder"]["kNN accuracy"] == result["knn_accuracy"]
    assert rows["random encoder"]["kNN accuracy"] == result["random_knn_accuracy"]
    for name, scores in result["label_efficiency"].items():  # the columns with 10% and 1% of the labels
        assert rows[name]["probe (1% labels)"] == scores["1%"]["probe_accuracy"]
        assert rows[name]["kNN (10% labels)"] == scores["10%"]["knn_accuracy"]
    assert result["knn_accuracy"] > 0.3  # ten classes: chance is 0.1
    assert (workdir / "curves.png").stat().st_size > 0 and (workdir / "embedding.png").stat().st_size > 0


def assert_user_error(experiment, config, workdir: pathlib.Path, message: str) -> None:
    """`experiment.train_and_evaluate(config, workdir)` raises a UserError matching `message`."""
    with pytest.raises(UserError, match=message):
        experiment.train_and_evaluate(config, str(workdir))
    assert not workdir.exists()


def assert_command_line_error(experiment, flags: list[str], workdir: pathlib.Path, message: str, capsys) -> None:
    """`python -m experiments.<name> <flags>` (through `cli.run`, in this process) exits with status 2
    and one line containing `message`."""
    name = experiment.NAME
    with pytest.raises(SystemExit) as exit_info:
        cli.run(experiment.train_and_evaluate, experiment.CONFIG, name, argv=[name, *flags, f"--workdir={workdir}"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not workdir.exists()


def tiny(config: ml_collections.ConfigDict, digits_dir: str) -> ml_collections.ConfigDict:
    """The experiment's config with a small CNN instead of the ResNet-18, for test time."""
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict({"widths": (8, 16, 32)})
    config.batch_size = 128
    config.epochs = 6
    config.eval_every = 0
    config.checkpoint_every = 1000
    config.conv_impl = "xla"
    config.data.data_dir = digits_dir
    return config


def train_losses(workdir) -> list[float]:
    return [record["loss"] for record in read_metrics(workdir) if record["split"] == "train"]


def run_shipped_steps(experiment, config, devices, impl, steps=2, metric="loss"):
    """`steps` steps of the experiment's own model, state and step (built by its `create`) on the
    first `devices` devices, as its training loop runs them (fed as `config.data.on_device` says):
    (the step's `metric` at each step, the final state)."""
    run = self_supervised.training_setup(experiment, config)
    run = setup.Setup(parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]), impl), run.spec, run.batches)
    _, state, step = experiment.create(config, run)
    fed_step = feed.feed(config, run.batches, run.data_parallel).step(step, donate=False)
    placed, losses = run.data_parallel.put_state(state), []
    for index in range(steps):
        placed, metrics = fed_step(placed, index)
        losses.append(float(np.ravel(jax.device_get(run.data_parallel.get_state(metrics))[metric])[0]))
    return np.array(losses), jax.device_get(run.data_parallel.get_state(placed))


def with_on_device(config, on_device: bool):
    """A copy of `config` with `data.on_device` set."""
    changed = ml_collections.ConfigDict(config.to_dict())
    changed.data.on_device = on_device
    return changed


def shipped(config, digits_dir):
    """The shipped config (ResNet-18 CIFAR stem, conv_impl=auto, its optimizer and schedule) at a
    test size: width 4, batch 32 of the 8×8 digits, warmup over the first of 4 epochs' steps."""
    config.model_options.width = 4
    config.batch_size = 32
    config.data.data_dir = digits_dir
    return config


# float32: sharded sums (synchronised BatchNorm, the gathered loss) add in another order than on one device
TOLERANCE = dict(rtol=2e-4, atol=2e-6)


def assert_same_run(eight, one, tolerance=TOLERANCE):
    (losses_eight, state_eight), (losses_one, state_one) = eight, one
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5)
    assert losses_one[1] != losses_one[0]
    for field in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_close(getattr(state_eight, field), getattr(state_one, field), **tolerance)


class Interrupted(Exception):
    """Stands for a kill between two steps: raised by the batches of `interrupt_batches`."""


def interrupt_batches(monkeypatch, at_step: int) -> list[int]:
    """Make `Batches.host_batch` raise `Interrupted` once, when asked for batch `at_step`; returns
    the list to which every batch read (before and after) appends its step."""
    steps_read, original, pending = [], Batches.host_batch, [at_step]

    def interrupted_host_batch(self, step):
        if step in pending:
            pending.clear()  # once: the restarted run reads to the end
            raise Interrupted
        steps_read.append(step)
        return original(self, step)

    monkeypatch.setattr(Batches, "host_batch", interrupted_host_batch)
    return steps_read
