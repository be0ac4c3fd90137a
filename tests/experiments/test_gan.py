"""`python -m experiments.gan`: the non-saturating and the minimax DCGAN trained side by side on the
digits over 8 fake devices, their scores reported as printed, their figures drawn, a stopped run
resumed to exactly both players' parameters and optimizer states, the shipped step the same on 8
devices as on 1, bad input one line."""

import contextlib
import io
import json
import math

import chex
import jax
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from experiments import gan
from experiments.configs.gan import get_config
from tests.experiments.checks import (
    Interrupted,
    assert_command_line_error,
    assert_same_run,
    interrupt_batches,
    run_shipped_steps,
)
from visionax import models
from visionax.models.costs import parameter_total
from visionax.train import checkpoint
from visionax.train.metrics import read_metrics
from visionax.train.state import create_train_state

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

FIGURES = ("samples_non_saturating.png", "samples_minimax.png", "curves.png", "generator_gradient.png",
           "latent_arithmetic.png")
LABELS = ("DCGAN, non-saturating", "DCGAN, minimax")


def tiny(digits_dir, classifier, **changes):
    """Widths 8 and 4, latent 8, one epoch of batch 64 (22 rounds), evaluated at 11 and 22 on 40
    samples scored by `classifier` (a classify workdir)."""
    config = get_config()
    config.data.data_dir, config.classifier_from = digits_dir, classifier
    config.generator_widths, config.discriminator_widths, config.latent_dim = (8, 4), (4, 8), 8
    config.batch_size, config.epochs = 64, 1
    config.log_every, config.eval_every, config.checkpoint_every = 11, 11, 1000
    config.num_samples = 40
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A small CNN with random weights saved as a classify run (experiments.sample_quality trains a real
    one when classifier_from is empty: tests/experiments/test_vae.py runs that path)."""
    workdir = tmp_path_factory.mktemp("classifier")
    model = models.get_model("small_cnn", num_classes=10, widths=(4, 8, 6))
    state = create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1), (8, 8, 1))
    checkpoint.claim_workdir(workdir, ml_collections.ConfigDict(
        {"model": "small_cnn", "conv_impl": "xla", "model_options": {"widths": (4, 8, 6)}}))
    manager = checkpoint.manager(workdir, keep=1, every=1)
    checkpoint.save(manager, state, force=True)
    checkpoint.wait(manager)
    manager.close()
    return str(workdir)


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_dir, classifier):
    workdir = tmp_path_factory.mktemp("gan")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = gan.train_and_evaluate(tiny(digits_dir, classifier), str(workdir))
    return results, workdir, printed.getvalue()


def test_results_json_holds_the_printed_table_and_the_evaluations(run):
    results, workdir, printed = run
    assert json.loads((workdir / "results.json").read_text()) == results
    lines = printed[printed.index(results["title"]):].splitlines()
    assert [cell.strip() for cell in lines[1].split("  ") if cell.strip()] == results["columns"]
    for line, row in zip(lines[3:5], results["rows"]):
        expected = ["—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
                    for value in row.values()]
        assert [cell.strip() for cell in line.split("  ") if cell.strip()] == expected
    assert [row["model"] for row in results["rows"]] == list(results["models"]) == list(LABELS)
    for row, (label, numbers), loss in zip(results["rows"], results["models"].items(), ("non_saturating", "minimax")):
        assert row == {"model": label, "parameters": numbers["parameters"], "test bits/dim": None,
                       "Fréchet distance": numbers["frechet_distance"],
                       "classifier score": numbers["classifier_score"],
                       "training seconds": round(numbers["training_seconds"], 1),
                       "sampling seconds/image": numbers["sampling_seconds_per_image"],
                       "class histogram": numbers["class_histogram"]}
        params = checkpoint.load_variables(workdir / loss)[0]["params"]
        assert numbers["parameters"] == parameter_total(params["generator"])
        assert numbers["discriminator_parameters"] == parameter_total(params["discriminator"])
        assert sum(numbers["class_histogram"]) == 40 and 1 <= numbers["classifier_score"] <= 10
        assert numbers["frechet_distance"] > 0 and numbers["sampling_seconds_per_image"] > 0
        # The evaluations of metrics.jsonl, at 11 and 22; the last one scores the final samples.
        evaluations = [{key: record[key] for key in ("step", "frechet_distance", "classifier_score")}
                       for record in read_metrics(workdir / loss) if record["split"] == "eval"]
        assert numbers["evaluations"] == evaluations and [e["step"] for e in evaluations] == [11, 22]
        assert evaluations[-1]["frechet_distance"] == numbers["frechet_distance"]
        train = [record for record in read_metrics(workdir / loss) if record["split"] == "train"]
        assert [record["step"] for record in train] == [11, 22]
        assert all(0 < record["d_real"] < 1 and 0 < record["d_fake"] < 1 for record in train)
    assert results["uniform_bits_per_dim"] == math.log2(17) and "no likelihood" in results["note"]
    arithmetic = results["latent_arithmetic"]
    assert arithmetic["model"] == LABELS[0] and len(set(arithmetic["classes"])) == 3
    histogram = results["models"][LABELS[0]]["class_histogram"]
    assert arithmetic["samples_per_class"] == [min(histogram[index], 8) for index in arithmetic["classes"]]
    assert sorted(histogram, reverse=True)[:3] == [histogram[index] for index in arithmetic["classes"]]


def test_the_figures_are_drawn(run):
    _, workdir, _ = run
    for name in FIGURES:
        pixels = np.asarray(Image.open(workdir / name).convert("L"), np.float64)
        assert pixels.std() > 10, name


def final_state(workdir):
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    return jax.tree.map(np.asarray, manager.restore(manager.latest_step()))


def test_a_run_stopped_half_way_resumes_to_both_players_uninterrupted_state(run, classifier, tmp_path, digits_dir,
                                                                           monkeypatch, capsys):
    """The minimax run stopped before its step 15 (checkpoint at 10) and started again: it resumes
    from step 10, reads batches 10..21 only, and ends with the uninterrupted run's parameters, batch
    statistics and optimizer states of both players, and its scores."""
    results, straight, _ = run
    config = tiny(digits_dir, classifier, losses="minimax", checkpoint_every=10, eval_every=0)
    steps_read = interrupt_batches(monkeypatch, 15)
    with pytest.raises(Interrupted):
        gan.train_and_evaluate(config, str(tmp_path))
    assert checkpoint.load_variables(tmp_path / "minimax")[1] == 10
    steps_read.clear()
    capsys.readouterr()
    resumed = gan.train_and_evaluate(config, str(tmp_path))
    assert f"resumed from step 10 ({tmp_path / 'minimax'})" in capsys.readouterr().out
    assert steps_read == list(range(10, 22))
    expected, actual = final_state(straight / "minimax"), final_state(tmp_path / "minimax")
    assert int(actual["step"]) == 22
    for field in ("params", "batch_stats", "opt_state", "rng"):
        chex.assert_trees_all_equal(actual[field], expected[field])
    assert set(actual["params"]) == set(actual["opt_state"]) == {"generator", "discriminator"}
    for key in ("frechet_distance", "classifier_score", "class_histogram"):
        assert resumed["models"][LABELS[1]][key] == results["models"][LABELS[1]][key], key


@pytest.fixture(scope="module")
def shipped_one_device(digits_dir):
    """The shipped config (its models at width 8, k = 2 discriminator updates) on 1 device."""
    config = get_config()
    config.data.data_dir, config.batch_size, config.discriminator_steps = digits_dir, 32, 2
    config.generator_widths, config.discriminator_widths = (16, 8), (8, 16)
    return config, run_shipped_steps(gan, config, 1, "shard_map", metric="discriminator_loss")


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_the_shipped_step_on_8_devices_equals_1_device(impl, shipped_one_device):
    """The whole round (k = 2 discriminator updates on their strided halves of the batch, the
    generator's BatchNorm synchronised, z from the global example index) on 8 devices equals 1."""
    config, one = shipped_one_device
    assert (config.losses, config.beta1, config.latent_dim) == ("non_saturating,minimax", 0.5, 32)
    assert_same_run(run_shipped_steps(gan, config, 8, impl, metric="discriminator_loss"), one)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.losses=non_saturating,wasserstein"], "unknown GAN loss 'wasserstein' in config.losses"),
        (["--config.discriminator_steps=0"], "discriminator_steps=0 must be >= 1"),
        (["--config.discriminator_steps=3", "--config.batch_size=32"], "discriminator_steps=3 does not divide the 4"),
        (["--config.generator_widths=(8,4,2,1)"], "generator_widths has 4 widths"),
        (["--config.discriminator_learning_rate=0"], "discriminator_learning_rate=0.0 must be positive"),
        (["--config.beta1=1.0"], "beta1=1.0 must be in [0, 1)"),
        (["--config.num_samples=500"], "num_samples=500 exceeds the 359 test images"),
        (["--config.latent_arithmetic=1,2"], "latent_arithmetic='1,2' must be three class indices"),
        (["--config.latent_arithmetic=1,2,10"], "names a class the 10-class data does not have"),
    ],
)
def test_bad_flags_fail_with_one_line(flags, message, tmp_path, digits_dir, capsys):
    assert_command_line_error(gan, [f"--config.data.data_dir={digits_dir}", *flags], tmp_path / "run", message, capsys)
