"""The command line: bad input gets one line naming the problem and the fix, exit status 2, and
touches no run; --help lists the config keys and exits 0; a run prints its resolved config, backend
and devices, and on resume the step it resumed from; keys that cannot change the result may change
on resume."""

import hashlib
import json
import pathlib
import subprocess
import sys

import pytest

from experiments import classify
from experiments.configs import classify as classify_config
from visionax import cli

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


CONFIG = pathlib.Path(classify.__file__).parent / "configs" / "classify.py"


def snapshot(directory: pathlib.Path) -> dict:
    return {
        str(path.relative_to(directory)): (path.stat().st_mtime_ns, hashlib.sha1(path.read_bytes()).hexdigest())
        for path in sorted(directory.rglob("*")) if path.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("run")
    argv = ["classify", f"--workdir={workdir}", "--config.epochs=1", f"--config.data.data_dir={digits_dir}",
            "--config.batch_size=64", "--config.checkpoint_every=10"]
    result = cli.run(classify.train_and_evaluate, CONFIG, "classify", argv=argv)
    assert result["steps"] == 22 and result["test_accuracy"] > 0.3
    return workdir, argv


def test_help_lists_every_config_key_with_its_default_and_exits_0(capsys):
    for flag in ("--help", "--helpfull"):
        with pytest.raises(SystemExit) as exit_info:
            cli.run(classify.train_and_evaluate, CONFIG, "classify", argv=["classify", flag],
                    docstring=classify.__doc__)
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(classify.__doc__.strip().splitlines()[0])
        config = classify_config.get_config()
        for key, value in cli.flat_config(config):
            assert f"--config.{key}={value!r}" in out
        assert "--config.optimizer='adam'" in out and "--config.data.name='digits'" in out


def test_help_of_a_config_variant_shows_the_variants_values(capsys):
    with pytest.raises(SystemExit):
        cli.run(classify.train_and_evaluate, CONFIG, "simclr",
                argv=["simclr", "--config=experiments/configs/simclr_cifar10.py:cpu30", "--help"])
    out = capsys.readouterr().out
    assert "--config.epochs=23" in out and "--config.model_options.width=32" in out


def test_a_run_prints_its_config_backend_devices_and_resume_step(finished_run, capsys):
    workdir, argv = finished_run
    cli.run(classify.train_and_evaluate, CONFIG, "classify", argv=argv + ["--config.log_every=5"])
    out = capsys.readouterr().out
    assert "config:\n" in out and "  batch_size = 64\n" in out and "  epochs = 1\n" in out
    assert "backend cpu, 8 device(s)" in out
    assert f"resumed from step 22 ({workdir})" in out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.no_such_key=1"], "unknown config key 'no_such_key'; see the keys with --help"),
        (["--config.data.name=no_such_dataset"], "unknown dataset 'no_such_dataset'"),
        (["--config.model=no_such_model"], "unknown model 'no_such_model'; choose one of"),
        (["--config.optimizer=no_such_optimizer"], "unknown optimizer 'no_such_optimizer'; choose one of"),
        (["--config.data.name=image_folder", "--config.data.folder=/no/such/folder"],
         "data folder '/no/such/folder' does not exist; pass --config.data.folder"),
        (["--config.batch_size=100"], "batch_size=100 is not divisible by the 8 devices"),
        (["--config.learning_rate=-0.5"], "learning_rate=-0.5 must be positive"),
        (["--config.learning_rate=abc"], "could not convert string to float"),
        (["--config.parallel=xmap"], "unknown parallel 'xmap'; choose one of shard_map, pmap"),
        (["--config.dtype=float8"], "unknown dtype 'float8'"),
        (["--config=experiments/configs/no_such_config.py"], "config file 'experiments/configs/no_such_config.py' not found"),
        (["--config=experiments/configs/no_such_config.py", "--help"],
         "config file 'experiments/configs/no_such_config.py' not found"),
        (["--config.schedule=linear"], "unknown schedule 'linear'; choose one of constant, cosine"),
        (["--config.weight_decay_mask=biases"], "unknown weight_decay_mask 'biases'"),
        (["--config.loss=hinge"], "unknown loss 'hinge'"),
        (["--config.seed=7"], "holds a run with another config (changed: seed); pass a new --workdir"),
        (["--config.seed=7", "--config.log_every=3"], "(changed: seed); pass a new --workdir"),
    ],
)
def test_bad_input_exits_2_with_one_line(flags, message, finished_run, capsys):
    workdir, argv = finished_run
    before = snapshot(workdir)
    with pytest.raises(SystemExit) as exit_info:
        cli.run(classify.train_and_evaluate, CONFIG, "classify", argv=argv + flags)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: "), error
    assert message in error[0]
    assert "Traceback" not in error[0]
    assert snapshot(workdir) == before


def test_rerunning_a_finished_run_changes_nothing_but_reports(finished_run):
    workdir, argv = finished_run
    checkpoints = snapshot(workdir / "checkpoints")
    result = cli.run(classify.train_and_evaluate, CONFIG, "classify", argv=argv)
    assert result["steps"] == 22
    assert snapshot(workdir / "checkpoints") == checkpoints


@pytest.mark.parametrize("key, value", [("log_every", 3), ("eval_every", 5), ("checkpoint_every", 7),
                                        ("keep_checkpoints", 4)])
def test_resuming_accepts_keys_that_cannot_change_the_result(finished_run, key, value):
    workdir, argv = finished_run
    result = cli.run(classify.train_and_evaluate, CONFIG, "classify", argv=argv + [f"--config.{key}={value}"])
    assert result["steps"] == 22
    assert json.loads((workdir / "config.json").read_text())[key] == value


def test_a_nan_run_exits_2_with_one_line_from_the_command_line(tmp_path, digits_dir):
    """A learning rate of 1e30 blows the parameters up within a few steps: the process ends with
    exit status 2 and one error line naming the fix, keeping no broken checkpoint."""
    process = subprocess.run(
        [sys.executable, "-m", "experiments.classify", f"--workdir={tmp_path}", "--config.epochs=1",
         "--config.learning_rate=1e30", "--config.log_every=1", "--config.checkpoint_every=4",
         f"--config.data.data_dir={digits_dir}"],
        capture_output=True, text=True, timeout=300, cwd=pathlib.Path(__file__).resolve().parents[1])
    assert process.returncode == 2, process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in process.stderr
    assert errors[0].startswith("error: non-finite training metrics at step ")
    assert "lower --config.learning_rate" in errors[0]
    assert not [path for path in (tmp_path / "checkpoints").iterdir() if path.name.isdigit()]
