"""`python -m experiments.tune`: the recipe's rules on scripted curves, the initial-loss check on a
model with a scaled-up last layer, log-uniform sampling, a tiny search end to end (each choice and
number recomputed from what the stages wrote), a stopped stage resumed exactly, a restarted search
training nothing, bad input stopped with one line."""

import json
import math
import shutil

import chex
import jax
import ml_collections
import numpy as np
import pytest
import scipy.stats

from experiments import tune
from experiments.configs.tune import get_config
from tests.experiments.checks import Interrupted, assert_command_line_error, interrupt_batches
from visionax import models
from visionax.data.preprocess import model_input
from visionax.train import checkpoint, setup, supervised

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

RULES = tune.CurveRules(falling=0.02, overfit_gap=0.05, fit_accuracy=0.99)


def curve(train_loss, validation_loss, train_accuracy, validation_accuracy, frozen=False):
    return {"train_loss": train_loss, "validation_loss": validation_loss, "train_accuracy": train_accuracy,
            "validation_accuracy": validation_accuracy, "frozen": frozen}


FLAT = [0.5, 0.4, 0.3, 0.3, 0.3]  # fell early, flat over the last quarter
FALLING = [1.0, 0.8, 0.6, 0.5, 0.4]  # fell by 20% over the last quarter


@pytest.mark.parametrize("scripted, verdict", [
    (curve(FALLING, FALLING, [0.5] * 5, [0.5] * 5), "still falling"),
    (curve(FALLING, [1.0, 0.8, 0.6, 0.5, 0.495], [0.5] * 5, [0.5] * 5), "underfitting"),  # validation fell 1% only
    (curve(FALLING, FLAT, [0.7, 0.8, 0.9, 0.99, 1.0], [0.7, 0.8, 0.9, 0.9, 0.9]), "overfitting"),
    (curve(FLAT, FLAT, [1.0] * 5, [0.94] * 5), "overfitting"),
    (curve(FLAT, FLAT, [1.0] * 5, [0.96] * 5), "fits"),  # a gap of 0.04 <= 0.05 at 100% training accuracy
    (curve(FLAT, FLAT, [0.8] * 5, [0.79] * 5), "underfitting"),
    (curve(FLAT, FLAT, [0.8] * 5, [0.76] * 5), "underfitting"),
    (curve(FLAT, FLAT, [0.995] * 5, [0.99] * 5), "fits"),
    (curve([1.0, 1.0, 0.98, 0.981, 0.9805], [1.0] * 5, [0.995] * 5, [0.99] * 5), "fits"),  # 0.05% fall: flat
    (curve([0.5, 0.6, 0.7, 0.8, 0.9], FLAT, [0.5] * 5, [0.5] * 5), "diverged"),  # the training loss rose
    (curve(FLAT, [0.3, 0.3, math.nan, 0.3, 0.3], [1.0] * 5, [1.0] * 5), "diverged"),
    (curve(FALLING, FALLING, [0.5] * 5, [0.5] * 5, frozen=True), "diverged"),
])
def test_each_rule_triggers_where_it_should_and_not_elsewhere(scripted, verdict):
    assert RULES.read(scripted) == verdict


def test_still_falling_compares_the_last_quarter_with_its_start():
    assert RULES.still_falling([1.0, 1.0, 1.0, 1.0, 0.97])  # 3% > 2%
    assert not RULES.still_falling([1.0, 1.0, 1.0, 1.0, 0.985])  # 1.5% < 2%
    assert not RULES.still_falling([2.0, 0.5, 0.5, 0.5, 0.5])  # fell before the last quarter
    assert RULES.still_falling([2.0, 1.5, 1.0, 0.8, 0.7, 0.6, 0.55, 0.5, 0.45])  # L[6] = 0.55 → 0.45
    assert not RULES.still_falling([1.0])


def test_initial_loss_is_the_data_loss_and_a_scaled_up_last_layer_is_flagged(digits_dir):
    """The initial loss equals a float64 cross-entropy of the model's training-mode logits and is
    near ln 10 for the small CNN; with the last layer's weights × 30 it is far above and flagged
    with that cause; a loss far below is flagged as a leak; the SVM expects (C − 1)Δ."""
    config = get_config()
    config.data.data_dir = digits_dir
    run = setup.setup(config)
    settings = supervised.SupervisedSettings(num_classes=10)
    model = models.get_model("small_cnn", num_classes=10, widths=(4, 8))
    batch = run.batches.host_batch(0)
    variables = model.init(jax.random.PRNGKey(0), model_input(batch["image"]))
    loss = tune.initial_loss(model, variables, batch, settings, jax.random.PRNGKey(1))
    logits, _ = model.apply(variables, model_input(batch["image"]), train=True, mutable=["batch_stats"])
    logits = np.asarray(logits, np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    assert loss == pytest.approx(-np.mean(log_p[np.arange(len(log_p)), batch["label"]]), rel=1e-5)
    expected = tune.expected_initial_loss(settings)
    assert expected == math.log(10) and tune.initial_loss_finding(loss, expected, 0.25) == ""
    scaled = jax.tree_util.tree_map_with_path(
        lambda path, leaf: leaf * 30 if "head" in jax.tree_util.keystr(path) and leaf.ndim == 2 else leaf, variables)
    scaled_loss = tune.initial_loss(model, scaled, batch, settings, jax.random.PRNGKey(1))
    assert scaled_loss > 2 * expected
    assert "last layer's initial weights" in tune.initial_loss_finding(scaled_loss, expected, 0.25)
    assert "labels leak" in tune.initial_loss_finding(0.1, expected, 0.25)
    assert tune.expected_initial_loss(supervised.SupervisedSettings(num_classes=10, loss="svm", svm_margin=2.0)) == 18


def search(**changes):
    return tune.Search.from_config(ml_collections.ConfigDict(tune.tune_config.search().to_dict() | changes))


def test_random_search_samples_log_uniformly_and_the_grid_tries_few_learning_rates():
    """log₁₀ of 4,000 draws over [1e-4, 1e-1] passes a Kolmogorov–Smirnov test against U(−4, −1),
    which uniform draws on the same interval fail; the trials stay within ± search_decades and draw
    every weight decay about equally often; the grid of as many trials has 3 distinct rates."""
    rng = np.random.default_rng(0)
    draws = tune.log_uniform(rng, 1e-4, 1e-1, 4000)
    assert draws.min() >= 1e-4 and draws.max() <= 1e-1
    assert scipy.stats.kstest(np.log10(draws), scipy.stats.uniform(-4, 3).cdf).pvalue > 0.01
    assert scipy.stats.kstest(np.log10(rng.uniform(1e-4, 1e-1, 4000)), scipy.stats.uniform(-4, 3).cdf).pvalue < 1e-6
    many = search(random_trials=3000, search_decades=1.0)
    trials = tune.random_trials(np.random.default_rng(1), 1e-2, many)
    rates = np.asarray([rate for rate, _ in trials])
    assert rates.min() >= 1e-3 and rates.max() <= 1e-1
    assert scipy.stats.kstest(np.log10(rates), scipy.stats.uniform(-3, 2).cdf).pvalue > 0.01
    counts = [sum(decay == value for _, decay in trials) for value in (1e-4, 1e-5, 0.0)]
    assert scipy.stats.chisquare(counts).pvalue > 0.01
    grid = tune.grid_trials(1e-2, search())
    assert len(grid) == 9 and sorted({round(rate, 12) for rate, _ in grid}) == [1e-3, 1e-2, 1e-1]
    assert len({rate for rate, _ in tune.random_trials(np.random.default_rng(2), 1e-2, search())}) == 9


def tiny(digits_dir, **changes):
    """The width-(4, 8) small CNN on digits, batch 64 (1,295 training digits after the 10% held out:
    20 steps an epoch), checkpoints every 10 steps; a search of 4-member stages."""
    config = get_config()
    config.data.data_dir = digits_dir
    config.model_options = ml_collections.ConfigDict({"widths": (4, 8)})
    config.batch_size, config.checkpoint_every = 64, 10
    config.tune.update({"overfit_batches": 2, "overfit_steps": 30, "lr_iterations": 10, "random_trials": 4,
                        "grid_learning_rates": 2, "weight_decays": "1e-4,0", "coarse_epochs": 1, "longer_trials": 2,
                        "longer_epochs": 2, "eval_points": 5, "eval_examples": 128, "dense_sweep": 4,
                        "dense_sweep_seeds": 2})
    config.update_from_flattened_dict(changes)
    return config


STAGES = ("overfit", "learning_rates", "random_search", "grid_search", "longer", "dense_sweep", "dense_sweep_seed1")


@pytest.fixture(scope="module")
def searched(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("tune")
    return tune.train_and_evaluate(tiny(digits_dir), str(workdir)), workdir


def trials_of(workdir, stage):
    return json.loads((workdir / stage / tune.TRIALS_FILE).read_text())["trials"]


def test_each_choice_follows_from_the_trials_the_stages_wrote(searched):
    results, workdir = searched
    assert json.loads((workdir / "results.json").read_text()) == results
    assert results["trained"] == list(STAGES)
    assert results["initial_loss_finding"] == "" and abs(results["initial_loss"] - math.log(10)) < 0.25 * math.log(10)
    stages = {stage: trials_of(workdir, stage) for stage in STAGES}
    assert results["overfit_accuracy"] == stages["overfit"][0]["train_accuracy"][-1]
    assert (results["overfit_finding"] == "") == (results["overfit_accuracy"] == 1.0)
    rates = stages["learning_rates"]
    assert [trial["learning_rate"] for trial in rates] == [0.1, 0.01, 0.001, 0.0001]
    assert all(trial["steps"] == [2, 4, 6, 8, 10] for trial in rates)
    center = min(rates, key=lambda trial: trial["train_loss"][-1])["learning_rate"]
    assert results["step3_learning_rate"] == center
    for trial in stages["random_search"]:
        assert center / 10 <= trial["learning_rate"] <= center * 10 and trial["weight_decay"] in (1e-4, 0.0)
    grid = [(trial["learning_rate"], trial["weight_decay"]) for trial in stages["grid_search"]]
    np.testing.assert_allclose(grid, [(center / 10, 1e-4), (center / 10, 0.0), (center * 10, 1e-4), (center * 10, 0.0)],
                               rtol=1e-12)
    overfit = stages["overfit"][0]
    assert overfit["num_steps"] == 30 and overfit["weight_decay"] == 0.0 and "validation_loss" not in overfit
    coarse = sorted(stages["random_search"] + stages["grid_search"], key=lambda trial: trial["validation_loss"][-1])
    assert [(trial["learning_rate"], trial["weight_decay"]) for trial in stages["longer"]] == [
        (trial["learning_rate"], trial["weight_decay"]) for trial in coarse[:2]]
    chosen = min(stages["longer"], key=lambda trial: trial["validation_loss"][-1])
    assert (results["learning_rate"], results["weight_decay"]) == (chosen["learning_rate"], chosen["weight_decay"])
    first, second = stages["dense_sweep"], stages["dense_sweep_seed1"]
    for seed, repeat in enumerate((first, second)):
        np.testing.assert_allclose([trial["learning_rate"] for trial in repeat], [1e-4, 1e-3, 1e-2, 1e-1], rtol=1e-12)
        assert {trial["seed"] for trial in repeat} == {seed}
    assert first[0]["validation_loss"] != second[0]["validation_loss"]  # another initialisation and batch order
    assert [json.loads((workdir / stage / "config.json").read_text())["seed"]
            for stage in ("dense_sweep", "dense_sweep_seed1")] == [0, 1]
    mean_loss = [np.mean([one["validation_loss"][-1], two["validation_loss"][-1]]) for one, two in zip(first, second)]
    np.testing.assert_allclose(results["dense_sweep_mean_validation_loss"], mean_loss, rtol=1e-12)
    best = first[int(np.argmin(mean_loss))]["learning_rate"]
    assert results["dense_sweep_learning_rate"] == best and results["ratio_to_dense_sweep"] == results["learning_rate"] / best
    assert results["dense_sweep_best_per_seed"] == [
        min(repeat, key=lambda trial: trial["validation_loss"][-1])["learning_rate"] for repeat in (first, second)]
    dense = first + second
    rows = [row for row in results["rows"]]
    assert len(rows) == 4 + 4 + 4 + 2 + 4 + 4
    for row, trial in zip(rows, rates + stages["random_search"] + stages["grid_search"] + stages["longer"] + dense):
        assert row["verdict"] == RULES.read(trial) and row["validation loss"] == trial["validation_loss"][-1]
    report = (workdir / tune.REPORT_FILE).read_text()
    for heading in ("## 1. Initial loss", "## 2. Overfit 2 minibatches", "## 3. Learning rates",
                    "## 4. Coarse search", "## 5–6.", "## Check: dense"):
        assert heading in report
    for image in ("learning_rates.png", "search.png", "curves.png", "dense_sweep.png"):
        assert f"]({image})" in report and (workdir / image).stat().st_size > 0


def test_a_trials_validation_numbers_equal_a_float64_computation_from_its_checkpoint(searched, digits_dir):
    """Member 1 of the longer stage: its final validation loss and accuracy are those of its
    checkpointed parameters on the held-out digits, recomputed in NumPy."""
    _, workdir = searched
    variables, step = checkpoint.load_variables(workdir / "longer")
    assert step == 40
    validation = setup.setup(tune.tuning_config(tiny(digits_dir), search())).validation
    model = models.get_model("small_cnn", num_classes=10, widths=(4, 8))
    member = jax.tree.map(lambda leaf: leaf[1], variables)
    logits = np.asarray(model.apply(member, model_input(validation.images), train=False), np.float64)
    log_p = logits - logits.max(1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(1, keepdims=True))
    trial = trials_of(workdir, "longer")[1]
    assert trial["validation_loss"][-1] == pytest.approx(-np.mean(log_p[np.arange(len(log_p)), validation.labels]),
                                                         rel=1e-5)
    assert trial["validation_accuracy"][-1] == np.mean(log_p.argmax(1) == validation.labels)


def test_a_second_call_trains_nothing(searched, digits_dir, monkeypatch):
    results, workdir = searched
    steps_read = interrupt_batches(monkeypatch, -1)
    again = tune.train_and_evaluate(tiny(digits_dir), str(workdir))
    assert steps_read == [0]  # only the batch the initial loss is measured on
    assert again["trained"] == [] and {**again, "trained": 0} == {**results, "trained": 0}


def test_a_stopped_stage_resumes_and_ends_as_the_uninterrupted_one(searched, digits_dir, tmp_path, monkeypatch, capsys):
    """The finished stages copied, the longer stage (40 steps, a checkpoint every 10) stopped before
    its step 35: the restart reads back the finished stages, resumes the longer one from step 30
    and ends with the uninterrupted run's parameters and trials."""
    results, workdir = searched
    shutil.copytree(workdir, tmp_path / "run", ignore=shutil.ignore_patterns("longer", "dense_sweep*"))
    steps_read = interrupt_batches(monkeypatch, 35)
    with pytest.raises(Interrupted):
        tune.train_and_evaluate(tiny(digits_dir), str(tmp_path / "run"))
    assert checkpoint.load_variables(tmp_path / "run" / "longer")[1] == 30
    steps_read.clear()
    capsys.readouterr()
    resumed = tune.train_and_evaluate(tiny(digits_dir), str(tmp_path / "run"))
    assert f"resumed from step 30 ({tmp_path / 'run' / 'longer'})" in capsys.readouterr().out
    assert steps_read == [0, *range(30, 40), *range(40), *range(40)]  # initial loss, the rest of longer, 2 sweeps
    assert resumed["trained"] == ["longer", "dense_sweep", "dense_sweep_seed1"]
    assert trials_of(tmp_path / "run", "longer") == trials_of(workdir, "longer")
    chex.assert_trees_all_equal(checkpoint.load_variables(tmp_path / "run" / "longer")[0],
                                checkpoint.load_variables(workdir / "longer")[0])
    assert resumed["rows"] == results["rows"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.tune.random_trials=0"], "tune.random_trials=0 must be >= 1"),
        (["--config.tune.lr_candidates=fast"], "tune.lr_candidates='fast' must be comma-separated numbers > 0"),
        (["--config.tune.weight_decays=1e-4,-1"], "tune.weight_decays='1e-4,-1' must be comma-separated numbers >= 0"),
        (["--config.tune.rank_by=speed"], "unknown tune.rank_by 'speed'"),
        (["--config.tune.dense_sweep=1"], "tune.dense_sweep=1 must be 0 (none) or at least 2"),
        (["--config.tune.overfit_batches=100"], "tune.overfit_batches=100 batches of 128 exceed"),
        (["--config.optimizer=lars"], "LARS applies it inside its update"),
        (["--config=experiments/configs/char_rnn.py"], "the config has no key 'model': it is not a supervised config"),
        (["--config=experiments/configs/tune.py:nothing"], "no supervised config experiments/configs/nothing.py"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, digits_dir, flags, message, capsys):
    assert_command_line_error(tune, [*flags, f"--config.data.data_dir={digits_dir}"], tmp_path / "run", message, capsys)
