"""Every error meant for people is a UserError, which the command line turns into one line and exit 2."""

import pytest

from visionax import cli
from visionax.errors import UserError
from visionax.train.loop import NonFiniteLossError


def test_user_errors_exit_2_with_one_line(capsys):
    assert issubclass(NonFiniteLossError, UserError)

    def train_and_evaluate(config, workdir):
        raise NonFiniteLossError("non-finite training metrics at step 3 (loss=nan); lower the rate\nnow")

    with pytest.raises(SystemExit) as exit_info:
        cli.run(train_and_evaluate, "experiments/configs/init_study.py", "init_study", argv=["x"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: non-finite training metrics at step 3 (loss=nan); lower the rate now\n"


def test_other_errors_are_not_hidden():
    def train_and_evaluate(config, workdir):
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        cli.run(train_and_evaluate, "experiments/configs/init_study.py", "init_study", argv=["x"])
