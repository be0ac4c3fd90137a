"""`python -m experiments.finetune` end to end on a tiny config: the table is results.json and each
cell's own results; the frozen layers of the transfer cells are the pretrained ones; a second call
trains nothing; a cell interrupted and restarted ends with the uninterrupted parameters; bad input
is one line."""

import json
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from experiments import classify, finetune
from experiments.configs.finetune import get_config
from tests.experiments.checks import Interrupted, assert_command_line_error, interrupt_batches
from visionax.train import checkpoint

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

CELLS = ["scratch_0.1", "supervised_linear_0.1", "supervised_top_0.1", "supervised_all_0.1"]


def tiny(digits_dir):
    config = get_config()
    config.data.data_dir = digits_dir
    config.pretrainings = "supervised"
    config.label_fractions = "0.1"  # about 14 labels per class, 71 examples, batches of 32 on 8 devices
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict({"widths": (8, 16, 16)})
    config.conv_impl = "xla"
    config.supervised.epochs = 2
    config.supervised.batch_size = 64
    config.transfer.steps = 8
    config.log_every = 4
    config.checkpoint_every = 4
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("finetune")
    return finetune.train_and_evaluate(tiny(digits_dir), str(workdir)), workdir


def cell_results(workdir, name):
    return json.loads((workdir / name / "results.json").read_text())


def test_the_table_is_the_cells_results(trained):
    results, workdir = trained
    assert json.loads((workdir / "results.json").read_text()) == results
    column = "10% (71 labels)"
    assert results["columns"] == ["case", column]
    rows = {row["case"]: row[column] for row in results["rows"]}
    assert list(rows) == ["from scratch", "supervised: feature extractor", "supervised: top stages",
                          "supervised: all layers", "best"]
    for name, row in zip(CELLS, results["rows"]):
        assert row[column] == results["test_accuracy"][name] == cell_results(workdir, name)["test_accuracy"]
        assert cell_results(workdir, name)["steps"] == 8
    winner = max(CELLS, key=lambda name: results["test_accuracy"][name])
    assert rows["best"] == results["rows"][CELLS.index(winner)]["case"] == results["best"]["0.1"]
    assert results["labelled_examples"] == {"0.1": 71}
    assert (workdir / "transfer.png").stat().st_size > 0
    cell_config = json.loads((workdir / "supervised_top_0.1" / "config.json").read_text())
    assert cell_config["init_from"] == str(workdir / "pretrain_supervised") == results["pretrained"]["supervised"]
    assert (cell_config["finetune"], cell_config["data"]["classes"], cell_config["data"]["label_fraction"]) == (
        "top", "5,6,7,8,9", 0.1)
    assert json.loads((workdir / "pretrain_supervised" / "config.json").read_text())["data"]["classes"] == "0,1,2,3,4"


def test_the_frozen_layers_of_each_cell_are_the_pretrained_ones(trained):
    _, workdir = trained
    pretrained, _ = checkpoint.load_variables(workdir / "pretrain_supervised")
    frozen = {"supervised_linear_0.1": {"Conv_0", "BatchNorm_0", "Conv_1", "BatchNorm_1", "Conv_2", "BatchNorm_2"},
              "supervised_top_0.1": {"Conv_0", "BatchNorm_0", "Conv_1", "BatchNorm_1"}}
    for name, names in frozen.items():
        variables, _ = checkpoint.load_variables(workdir / name)
        for collection in ("params", "batch_stats"):
            for layer, subtree in variables[collection].items():
                same = jax.tree.leaves(jax.tree.map(np.array_equal, subtree, pretrained[collection][layer]))
                assert all(same) == (layer in names), (name, collection, layer)


def test_a_second_call_trains_nothing(trained, digits_dir, monkeypatch):
    results, workdir = trained

    def refuse(*args):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr(classify, "train_and_evaluate", refuse)
    assert finetune.train_and_evaluate(tiny(digits_dir), str(workdir)) == results


def test_an_interrupted_cell_resumes_to_the_uninterrupted_parameters(trained, digits_dir, tmp_path, monkeypatch):
    """The last cell interrupted at its batch 6 (checkpoint 4) and the experiment started again: the
    finished cells are skipped, the cell reads only batches 4..7, and ends as the uninterrupted one."""
    results, workdir = trained
    copy = tmp_path / "finetune"
    shutil.copytree(workdir, copy)
    shutil.rmtree(copy / CELLS[-1])
    steps_read = interrupt_batches(monkeypatch, at_step=6)
    with pytest.raises(Interrupted):
        finetune.train_and_evaluate(tiny(digits_dir), str(copy))
    assert steps_read == list(range(6))
    steps_read.clear()
    again = finetune.train_and_evaluate(tiny(digits_dir), str(copy))
    assert steps_read == [4, 5, 6, 7]
    assert again["test_accuracy"] == results["test_accuracy"]
    resumed, uninterrupted = (checkpoint.load_variables(path / CELLS[-1])[0] for path in (copy, workdir))
    jax.tree.map(np.testing.assert_array_equal, resumed, uninterrupted)


@pytest.mark.parametrize("flags, message", [
    (["--config.cases=scratch,best"], "unknown case 'best' in config.cases"),
    (["--config.pretrainings=imagenet"], "unknown pretraining 'imagenet' in config.pretrainings"),
    (["--config.label_fractions=0,1"], "label_fractions='0,1' must be comma-separated numbers in (0, 1]"),
    (["--config.label_fractions=0.001"], "keeps 5 training examples, fewer than the 8 devices"),
    (["--config.transfer.finetune_stages=6"], "finetune_stages=6 exceeds the 5 stages of resnet18"),
    (["--config.transfer.backbone_lr_multiplier=0"], "backbone_lr_multiplier=0.0 must be positive"),
    (["--config.pretrained_simclr=/nonexistent"], "pretrained_simclr='/nonexistent' holds no checkpoints"),
    (["--config.target_classes=5,10"], "target_classes='5,10' must be distinct comma-separated class indices in 0..9"),
])
def test_bad_input_is_one_line(flags, message, tmp_path, digits_dir, capsys):
    fractions = [] if any("label_fractions" in flag for flag in flags) else ["--config.label_fractions=0.1"]
    assert_command_line_error(finetune, [*fractions, *flags, f"--config.data.data_dir={digits_dir}"], tmp_path / "run",
                              message, capsys)


def test_the_cifar10_variant_pretrains_simclr_as_its_cpu30_config_and_fine_tunes_all_ten_classes():
    """finetune.py:cifar10_cpu: SimCLR on every CIFAR-10 class with simclr_cifar10.py:cpu30's encoder,
    augmentation and temperature for 5 epochs, then the same ten classes with 1% and 10% of the labels."""
    from experiments.configs import finetune as finetune_config
    from experiments.configs import simclr_cifar10

    config, reference = finetune_config.get_config("cifar10_cpu"), simclr_cifar10.get_config("cpu30")
    pretraining = finetune.pretraining_config(config, "simclr")
    for key in ("model", "batch_size", "learning_rate", "warmup_epochs", "temperature", "head_hidden_dim", "optimizer"):
        assert pretraining[key] == reference[key], key
    assert pretraining.augment.to_dict() == reference.augment.to_dict()
    assert pretraining.model_options.to_dict() == reference.model_options.to_dict() == {"cifar_stem": False, "width": 32}
    assert pretraining.epochs == 5 and pretraining.data.name == "image_folder"
    assert pretraining.data.classes == config.target_classes == "0,1,2,3,4,5,6,7,8,9"
    cells = finetune.cells_of(config)
    assert [cell.name for cell in cells] == ["scratch_0.01", "scratch_0.1"] + [
        f"simclr_{case}_{fraction}" for case in ("linear", "top", "all") for fraction in ("0.01", "0.1")]
    cell = finetune.cell_config(config, cells[-1], "<pretrained>", examples=5000)
    assert (cell.batch_size, cell.epochs, cell.finetune, cell.data.label_fraction) == (64, 8, "all", 0.1)
    with pytest.raises(ValueError, match="unknown variant 'gpu' of finetune.py"):
        finetune_config.get_config("gpu")
