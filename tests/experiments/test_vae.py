"""`python -m experiments.vae`: two tiny VAEs trained on the digits over 8 fake devices, their bounds
and sample scores reported as printed, their figures drawn, a stopped run resumed exactly, the shipped
step the same on 8 devices as on 1, bad input one line."""

import contextlib
import io
import json
import math

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from experiments import vae
from experiments.configs.vae import get_config
from tests.experiments.checks import (
    Interrupted,
    assert_command_line_error,
    assert_same_run,
    interrupt_batches,
    run_shipped_steps,
    train_losses,
)
from visionax.models.costs import parameter_total
from visionax.train import checkpoint
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

FIGURES = ("reconstructions.png", "samples.png", "interpolation.png", "manifold.png", "curves.png")


def tiny(digits_dir, **changes):
    """Latent sizes 3 and 2 at width 4, 3 epochs of 64 digits (66 steps each), the bounds on 40 test
    images with k = 5, 40 samples scored by a classifier trained for 1 epoch."""
    config = get_config()
    config.data.data_dir = digits_dir
    config.latent_sizes, config.width, config.batch_size, config.epochs = "3,2", 4, 64, 3
    config.log_every, config.checkpoint_every, config.eval_every = 2, 20, 0
    config.iwae_samples, config.eval_examples, config.eval_batch_size = 5, 40, 40
    config.num_samples, config.classifier_epochs = 40, 1
    config.shown, config.interpolation_steps, config.manifold_size = 4, 3, 3
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("vae")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = vae.train_and_evaluate(tiny(digits_dir), str(workdir))
    return results, workdir, printed.getvalue()


def test_both_vaes_learn_and_their_importance_weighted_bound_is_the_tighter(run):
    results, workdir, _ = run
    models = results["models"]
    assert list(models) == ["VAE, latent 3", "VAE, latent 2"]
    for size, numbers in zip((3, 2), models.values()):
        losses = train_losses(workdir / f"latent{size}")
        assert len(losses) == 33 and losses[-1] < losses[0] - 10, losses  # nats per image
        assert numbers["steps"] == 66 and numbers["latent_size"] == size
        assert numbers["test_bits_per_dim"] < numbers["negative_elbo_bits_per_dim"] < results["uniform_bits_per_dim"]
        assert numbers["iwae_nats"] < numbers["negative_elbo_nats"]
        assert numbers["test_bits_per_dim"] == pytest.approx(numbers["iwae_nats"] / (64 * math.log(2)), rel=1e-6)
        params = checkpoint.load_variables(workdir / f"latent{size}")[0]["params"]
        assert numbers["parameters"] == parameter_total(params)
        assert sum(numbers["class_histogram"]) == 40 and numbers["frechet_distance"] > 0
        assert 1 <= numbers["classifier_score"] <= 10 and numbers["sampling_seconds_per_image"] > 0
        evaluation = [record for record in read_metrics(workdir / f"latent{size}") if record["split"] == "eval"]
        assert [record["step"] for record in evaluation] == [66]
        assert evaluation[0]["iwae_bits_per_dim"] == numbers["test_bits_per_dim"]
    assert results["uniform_bits_per_dim"] == math.log2(17) and results["exact_discrete_likelihood"]
    assert (results["test_images"], results["dimensions"], results["iwae_samples"]) == (40, 64, 5)


def test_results_json_holds_the_printed_table(run):
    results, workdir, printed = run
    assert json.loads((workdir / "results.json").read_text()) == results
    lines = printed[printed.index(results["title"]):].splitlines()
    assert lines[1].split("  ")[0].strip() == "model" and len(results["rows"]) == 3
    for line, row in zip(lines[3:6], results["rows"]):
        cells = [cell for cell in line.split("  ") if cell.strip()]
        expected = ["—" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)
                    for value in row.values()]
        assert [cell.strip() for cell in cells] == expected
    numbers = results["models"]["VAE, latent 2"]
    assert results["rows"][1] == {
        "model": "VAE, latent 2", "parameters": numbers["parameters"], "test bits/dim": numbers["test_bits_per_dim"],
        "negative ELBO bits/dim": numbers["negative_elbo_bits_per_dim"], "IWAE nats/image": numbers["iwae_nats"],
        "negative ELBO nats/image": numbers["negative_elbo_nats"], "Fréchet distance": numbers["frechet_distance"],
        "classifier score": numbers["classifier_score"], "training seconds": numbers["training_seconds"],
        "sampling seconds/image": numbers["sampling_seconds_per_image"]}
    assert results["rows"][2]["test bits/dim"] == math.log2(17)


def test_the_figures_are_drawn(run):
    _, workdir, _ = run
    for name in FIGURES:
        pixels = np.asarray(Image.open(workdir / name).convert("L"), np.float64)
        assert pixels.std() > 10, name


def final_params(workdir):
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    return jax.tree.map(np.asarray, manager.restore(manager.latest_step()))["params"]


def test_a_run_stopped_half_way_resumes_to_the_uninterrupted_parameters(run, tmp_path, digits_dir, monkeypatch, capsys):
    """The latent-3 model stopped before its step 45 (checkpoint at 40) and the run started again: it
    resumes from step 40, reads only batches 40..65, trains the latent-2 model, and both end with the
    parameters (and scores) of the uninterrupted run."""
    _, straight, _ = run
    config = tiny(digits_dir, classifier_from=str(straight / "classifier"))
    steps_read = interrupt_batches(monkeypatch, 45)
    with pytest.raises(Interrupted):
        vae.train_and_evaluate(config, str(tmp_path))
    assert checkpoint.load_variables(tmp_path / "latent3")[1] == 40
    steps_read.clear()
    capsys.readouterr()
    resumed = vae.train_and_evaluate(config, str(tmp_path))
    assert f"resumed from step 40 ({tmp_path / 'latent3'})" in capsys.readouterr().out
    assert steps_read == list(range(40, 66)) + list(range(66))
    for size in (3, 2):
        chex.assert_trees_all_equal(final_params(tmp_path / f"latent{size}"), final_params(straight / f"latent{size}"))
    expected = run[0]["models"]
    for name, numbers in resumed["models"].items():
        for key in ("test_bits_per_dim", "negative_elbo_nats", "frechet_distance", "classifier_score"):
            assert numbers[key] == expected[name][key], (name, key)


@pytest.mark.parametrize("decoder", ["discretized_logistic", "bernoulli"])
def test_the_shipped_step_on_8_devices_equals_1_device(decoder, digits_dir):
    config = get_config()
    config.data.data_dir, config.width, config.batch_size, config.decoder = digits_dir, 4, 32, decoder
    assert (config.latent_sizes, config.levels, config.optimizer) == ("16,2", 17, "adam")
    assert_same_run(run_shipped_steps(vae, config, 8, "shard_map"), run_shipped_steps(vae, config, 1, "shard_map"))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.decoder=gaussian"], "unknown decoder 'gaussian'; choose one of bernoulli, discretized_logistic"),
        (["--config.levels=300"], "levels=300 must be in 2..256"),
        (["--config.latent_sizes=16,0"], "latent_sizes='16,0' must be distinct comma-separated positive integers"),
        (["--config.interpolation_steps=1"], "interpolation_steps=1 must be >= 2"),
        (["--config.num_samples=500"], "num_samples=500 exceeds the 359 test images"),
        (["--config.eval_batch_size=100"], "eval_batch_size=100 is not divisible by the 8 devices"),
        ([f"--config={vae.CONFIG.parent / 'vae_cifar10.py'}:gpu"], "unknown variant 'gpu' of vae_cifar10.py"),
    ],
)
def test_bad_flags_fail_with_one_line(flags, message, tmp_path, digits_dir, capsys):
    assert_command_line_error(vae, [f"--config.data.data_dir={digits_dir}", *flags], tmp_path / "run", message, capsys)
