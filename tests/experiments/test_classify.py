"""`python -m experiments.classify` end to end: trains, evaluates, writes results.json (the printed
table's numbers), starts from another run's encoder with init_from, and takes the regularisers."""

import functools
import json

import pytest

from experiments import classify
from experiments.configs.classify import get_config
from tests.experiments.checks import assert_command_line_error
from visionax.train import early_stopping, optimizer, setup, supervised, transfer
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def small(digits_dir, **changes):
    config = get_config()
    config.epochs = 2
    config.batch_size = 64
    config.eval_every = 0
    config.data.data_dir = digits_dir
    config.update_from_flattened_dict(changes)
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("classify")
    return classify.train_and_evaluate(small(digits_dir), str(workdir)), workdir


def test_trains_and_writes_the_table_it_prints(trained):
    results, workdir = trained
    assert results["steps"] == 44 and results["test_accuracy"] > 0.8
    assert json.loads((workdir / "results.json").read_text()) == results
    test_row = results["rows"][1]
    assert test_row["split"] == "test" and test_row["accuracy"] == results["test_accuracy"]
    assert test_row["loss"] == results["test_loss"]
    train_records = [record for record in read_metrics(workdir) if record["split"] == "train"]
    assert results["rows"][0]["loss"] == train_records[-1]["loss"]
    assert (workdir / "curves.png").stat().st_size > 0


def test_init_from_starts_from_the_trained_encoder(trained, tmp_path, digits_dir, capsys):
    results, workdir = trained
    # one more epoch from the trained weights learns from a better start than from scratch
    warm = classify.train_and_evaluate(small(digits_dir, epochs=1, init_from=str(workdir)), str(tmp_path / "warm"))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("init_from"))
    assert f"init_from {workdir} (step 44): loaded" in line
    cold = classify.train_and_evaluate(small(digits_dir, epochs=1), str(tmp_path / "cold"))
    first = lambda path: [r for r in read_metrics(path) if r["split"] == "train"][0]["loss"]  # noqa: E731
    assert first(tmp_path / "warm") < 0.5 * first(tmp_path / "cold")
    assert warm["test_accuracy"] > cold["test_accuracy"]


REGULARISERS = {"augment.crop_padding": 1, "augment.flip_probability": 0.5, "augment.cutout_size": 2,
                "augment.mixup_alpha": 0.2, "l2_penalty": 0.01}


def first_step_loss(config) -> float:
    """The loss of the first step of `config`'s run, computed here from its parts: the state and
    batch 0 the run starts from, and the supervised step with the config's settings."""
    run = setup.setup(config)
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    model = setup.model_from_config(config, run.num_classes)
    tx = optimizer.create_optimizer(config, total_steps=2, steps_per_epoch=run.batches.steps_per_epoch)
    state, step = transfer.create(config, model, tx, run.image_shape,
                                  functools.partial(supervised.train_step, settings=settings))
    step_function = run.data_parallel.step(step)
    _, metrics = step_function(run.data_parallel.put_state(state),
                               run.data_parallel.put_batch(run.batches.host_batch(0)))
    return float(run.data_parallel.get_state(metrics)["loss"])


def test_regularisers_from_the_config_reach_the_step(tmp_path, digits_dir):
    """The step's settings carry every regulariser of the config (crop, flip, cutout, mixup, L2), the
    run's logged first-step loss is that of the step with those settings, and differs from the step
    with all of them off (what each one does to the step: tests/train/test_supervised.py)."""
    config = small(digits_dir, epochs=1, log_every=1, **REGULARISERS)
    settings = supervised.SupervisedSettings.from_config(config, num_classes=10)
    assert {key: getattr(settings, key.split(".")[-1]) for key in REGULARISERS} == REGULARISERS
    results = classify.train_and_evaluate(config, str(tmp_path))
    logged = [record for record in read_metrics(tmp_path) if record["split"] == "train"][0]
    assert results["steps"] == 22 and logged["step"] == 1
    assert logged["loss"] == pytest.approx(first_step_loss(config), rel=1e-5)
    plain = first_step_loss(small(digits_dir, epochs=1, log_every=1,
                                  **{key: type(value)(0) for key, value in REGULARISERS.items()}))
    assert abs(logged["loss"] - plain) > 1e-3


def test_early_stopping_ends_with_the_best_validation_evaluation(tmp_path, digits_dir):
    """Validation every 4 steps, stopping after one evaluation without a gain of 0.02: the run stops
    where the rule says on the recorded accuracies, the best checkpoint is the best evaluation's
    step, and the final test (and validation) numbers are those of its parameters."""
    config = small(digits_dir, epochs=4, eval_every=4, validation_fraction=0.1,
                   **{"early_stopping.patience": 1, "early_stopping.min_delta": 0.02})
    results = classify.train_and_evaluate(config, str(tmp_path))
    evaluations = {record["step"]: record for record in read_metrics(tmp_path) if record["split"] == "eval"}
    rule = early_stopping.Rule("validation_accuracy", "max", patience=1, min_delta=0.02)
    progress = early_stopping.progress(rule, [(step, record["validation_accuracy"])
                                              for step, record in evaluations.items()])
    assert progress.stopped and results["steps"] == max(evaluations) < 4 * 20
    assert results["best_step"] == progress.best_step < results["steps"]
    assert sorted(int(path.name) for path in (tmp_path / "best_checkpoint").iterdir()) == [progress.best_step]
    best = evaluations[progress.best_step]
    assert results["test_accuracy"] == best["accuracy"] and results["test_loss"] == best["loss"]
    assert results["validation_accuracy"] == best["validation_accuracy"] == progress.best
    assert results["rows"][2]["split"] == "validation" and results["rows"][2]["examples"] == 143


@pytest.mark.parametrize("flags, message", [
    (["--config.finetune=partial"], "unknown finetune 'partial'; choose one of linear, top, all"),
    (["--config.finetune=linear"], "finetune=linear starts from a pretrained run; pass --config.init_from="),
    (["--config.early_stopping.patience=-1"], "early_stopping.patience=-1 must be an integer >= 0"),
    (["--config.early_stopping.patience=2"], "early stopping reads a validation split, and there is none"),
    (["--config.early_stopping.patience=2", "--config.validation_fraction=0.1", "--config.early_stopping.metric=loss"],
     "unknown early_stopping.metric 'loss'; choose one of validation_accuracy, validation_loss"),
])
def test_bad_transfer_and_early_stopping_settings_are_one_line(flags, message, tmp_path, digits_dir, capsys):
    assert_command_line_error(classify, [*flags, f"--config.data.data_dir={digits_dir}"], tmp_path / "run", message,
                              capsys)


def test_finetune_stages_beyond_the_model_are_one_line(trained, tmp_path, digits_dir, capsys):
    _, workdir = trained
    flags = ["--config.finetune=top", "--config.finetune_stages=4", f"--config.init_from={workdir}",
             f"--config.data.data_dir={digits_dir}"]
    assert_command_line_error(classify, flags, tmp_path / "run", "finetune_stages=4 exceeds the 3 stages of small_cnn",
                              capsys)


def test_the_cifar10_recipe_is_the_one_its_docstring_states():
    """classify_cifar10.py: ResNet-18 with the CIFAR stem, SGD momentum 0.9 at 0.1, 1 warmup epoch then
    cosine, weight decay 5e-4 on kernels only, crops of 4-pixel padding and flips, the regularisers off
    and one flag each; the cpu variant only narrower and shorter."""
    from experiments.configs import classify_cifar10

    full, cpu = classify_cifar10.get_config(), classify_cifar10.get_config("cpu")
    for config in (full, cpu):
        assert (config.model, config.model_options.cifar_stem, config.conv_impl) == ("resnet18", True, "auto")
        assert (config.optimizer, config.learning_rate, config.schedule, config.warmup_epochs) == (
            "momentum", 0.1, "warmup_cosine", 1)
        assert (config.weight_decay, config.weight_decay_mask, config.batch_size) == (5e-4, "weights", 128)
        assert (config.augment.crop_padding, config.augment.flip_probability) == (4, 0.5)
        assert (config.augment.cutout_size, config.augment.mixup_alpha) == (0, 0.0)
        assert (config.model_options.dropout, config.model_options.drop_path) == (0.0, 0.0)
        assert config.data.name == "image_folder" and config.data.image_size == 32
    assert full.epochs == 200 and "width" not in full.model_options
    assert cpu.epochs == 4 and cpu.model_options.width == 16
    with pytest.raises(ValueError, match="unknown variant 'gpu'"):
        classify_cifar10.get_config("gpu")
