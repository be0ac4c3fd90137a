"""Bad input gets one line naming the problem and the fix, exit status 2, and touches no run."""

import hashlib
import pathlib

import pytest

from experiments import classify
from visionax import cli

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


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.no_such_key=1"], "unknown config key 'no_such_key'"),
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
        (["--config.seed=7"], "holds a run with another config (changed: seed); pass a new --workdir"),
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
