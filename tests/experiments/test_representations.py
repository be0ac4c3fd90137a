"""`python -m experiments.representations` end to end on a tiny config: every row is scored with the
label-efficiency evaluation of its own features (the method's saved embeddings, the supervised
classifier's features before its head), every method ran with the shared encoder and the epochs its
budget allows, a second call trains nothing, bad input is one line."""

import json
import os

import ml_collections
import numpy as np
import pytest

from experiments import representations
from experiments.configs.representations import get_config
from tests.experiments.checks import assert_command_line_error, assert_user_error
from visionax import evaluate
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.train import setup
from visionax.train.checkpoint import load_variables

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def tiny(digits_dir):
    config = get_config()
    config.data.data_dir = digits_dir
    config.methods = "supervised,rotation"
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict({"widths": (8, 16, 16)})
    config.conv_impl = "xla"
    config.batch_size = 64
    config.budget_seconds = 1e-3  # one epoch each
    config.calibration_steps = 1
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_dir):
    """(results, workdir, budget.json as each method's training started) of the tiny run."""
    workdir = tmp_path_factory.mktemp("representations")
    train_method = representations.train_method
    budgets_at_training = {}

    def recording_train_method(config, name, entry, method_workdir):
        budgets_at_training[name] = json.loads((workdir / "budget.json").read_text())
        return train_method(config, name, entry, method_workdir)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(representations, "train_method", recording_train_method)
        results = representations.train_and_evaluate(tiny(digits_dir), str(workdir))
    return results, workdir, budgets_at_training


def test_every_row_is_the_label_efficiency_of_its_features(trained, digits_dir):
    results, workdir, _ = trained
    config = tiny(digits_dir)
    run = setup.setup(config)
    assert json.loads((workdir / "results.json").read_text()) == results
    rows = {row["representation"]: row for row in results["rows"]}
    assert list(rows) == ["raw pixels", "random encoder", "supervised (labels)", "rotation"]
    saved = np.load(workdir / "rotation" / "embeddings.npz")
    supervised_train, supervised_test = representations.classifier_features(config, run, str(workdir / "supervised"))
    features = {"raw pixels": (evaluate.pixel_features(run.train.images), evaluate.pixel_features(run.test.images)),
                "rotation": (saved["train"], saved["test"]),
                "supervised (labels)": (supervised_train, supervised_test)}
    for name, (train, test) in features.items():
        scores = evaluate.label_efficiency(train, test, run.train, run.test, 10, config.seed)
        assert results["label_efficiency"][name] == scores
        assert rows[name]["probe (1% labels)"] == scores["1%"]["probe_accuracy"]
        assert rows[name]["kNN accuracy"] == scores["100%"]["knn_accuracy"]
        assert rows[name]["dimension"] == train.shape[1] == (64 if name == "raw pixels" else 16)
    # the rotation run's own table scored the same features with the same subsets
    rotation_results = json.loads((workdir / "rotation" / "results.json").read_text())
    assert rotation_results["label_efficiency"]["learned encoder"] == results["label_efficiency"]["rotation"]


def test_the_supervised_features_are_the_classifiers_before_its_head(trained, digits_dir):
    _, workdir, _ = trained
    config = tiny(digits_dir)
    run = setup.setup(config)
    _, test = representations.classifier_features(config, run, str(workdir / "supervised"))
    variables, _ = load_variables(str(workdir / "supervised"))
    classifier_config = representations.method_config(config, "supervised", 1)
    model = setup.model_from_config(classifier_config, 10)
    logits = model.apply(variables, model_input(run.test.images), train=False)
    head = variables["params"]["head"]
    np.testing.assert_allclose(test @ np.asarray(head["kernel"]) + np.asarray(head["bias"]), logits,
                               rtol=1e-4, atol=1e-4)


def test_every_method_ran_with_the_shared_encoder_for_its_budgets_epochs(trained):
    results, workdir, budgets_at_training = trained
    for name in ("supervised", "rotation"):
        run_config = json.loads((workdir / name / "config.json").read_text())
        assert (run_config["model"], run_config["model_options"], run_config["seed"], run_config["batch_size"]) == (
            "small_cnn", {"widths": [8, 16, 16]}, 0, 64)
        entry = results["budget"][name]
        assert entry["epochs"] == run_config["epochs"] == 1
        assert json.loads((workdir / name / "results.json").read_text())["steps"] == entry["steps_per_epoch"]
    assert results["budget"] == json.loads((workdir / "budget.json").read_text())
    # every method was timed before the first one trained (a busy machine later costs time, not epochs)
    for name in ("supervised", "rotation"):
        assert set(budgets_at_training[name]) == {"supervised", "rotation"}
    rows = {row["representation"]: row["training"] for row in results["rows"]}
    assert rows["rotation"].startswith(f"{results['budget']['rotation']['steps_per_epoch']} steps (1 epoch")


def test_the_epochs_are_those_that_fit_the_budget(monkeypatch, digits_dir):
    config = tiny(digits_dir)
    config.budget_seconds = 11.5
    monkeypatch.setattr(representations, "seconds_per_step", lambda module, run_config, steps: (0.3, 4))
    budget = {}
    entry = representations.plan(config, "rotation", budget)
    assert entry["epochs"] == 9 and budget == {"rotation": entry}  # 9 epochs of 1.2 s fit in 11.5 s, 10 do not
    assert entry["planned_seconds"] == pytest.approx(10.8)
    config.budget_seconds = 0.5
    assert representations.plan(config, "simclr", budget)["epochs"] == 1  # at least one
    assert representations.plan(config, "rotation", budget) is entry  # planned once: a restart keeps it


def test_a_second_call_trains_nothing(trained, digits_dir):
    results, workdir, _ = trained
    stamps = {name: os.stat(workdir / name / "results.json").st_mtime_ns for name in ("supervised", "rotation")}
    again = representations.train_and_evaluate(tiny(digits_dir), str(workdir))
    assert again["label_efficiency"] == results["label_efficiency"]
    assert stamps == {name: os.stat(workdir / name / "results.json").st_mtime_ns for name in stamps}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"methods": "rotation,jigsaw"}, "unknown method 'jigsaw' in config.methods"),
        ({"budget_seconds": 0.0}, "budget_seconds=0.0 must be > 0"),
    ],
)
def test_bad_settings_are_user_errors(change, message, tmp_path, digits_dir):
    config = tiny(digits_dir)
    config.update_from_flattened_dict(change)
    assert_user_error(representations, config, tmp_path / "run", message)


def test_a_bad_flag_is_one_line_and_exit_status_2(tmp_path, capsys):
    assert_command_line_error(representations, ["--config.methods=rotation,jigsaw"], tmp_path / "run",
                              "unknown method 'jigsaw' in config.methods", capsys)


def test_the_cifar10_table_starts_each_method_from_its_cifar10_recipe_with_the_shared_encoder():
    config = get_config("cifar10")
    assert config.cifar10_recipes and "clip" not in config.methods.split(",")
    runs = {name: representations.method_config(config, name, 3) for name in config.methods.split(",")}
    assert (runs["relative_position"].patch_size, runs["relative_position"].gap) == (7, 3)  # not the digits' 2, 1
    assert (runs["cpc"].patch_size, runs["cpc"].stride) == (16, 8)  # a 3×3 grid, not 15×15 patches of 4 pixels
    assert runs["simclr"].temperature == 0.1 and runs["moco"].queue_size == 4096  # their cpu30 recipes
    assert runs["split_brain"].data.name == runs["context_encoder"].data.name == "image_folder"
    assert runs["supervised"].augment.crop_padding == 4 and runs["rotation"].augment.flip_probability == 0.5
    for run in runs.values():
        assert (run.model, run.model_options.to_dict(), run.batch_size, run.epochs) == (
            "resnet18", {"cifar_stem": False, "width": 32}, 256, 3)
    config.methods = "simclr,clip"
    with pytest.raises(UserError, match="method 'clip' has no CIFAR-10 recipe"):
        representations.check_config(config)
