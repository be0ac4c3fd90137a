"""`python -m experiments.vit`: a small ViT against ResNet-18 at equal training time, end to end on
the embedded digits with tiny models, the equal-time arithmetic on real and fake clocks, the plot,
and bad flags."""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from PIL import Image

from experiments import vit
from experiments.configs.vit import get_config
from tests.experiments.checks import assert_command_line_error
from visionax import parallel
from visionax.errors import UserError
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

TICK = 2.0**-6  # the fake clock's step: a power of two, so sums of ticks are exact


def tiny(digits_dir, **changes):
    """2 epochs of 11 steps (batch 128 on 8 devices): a ViT of width 32 and 2 blocks, and in the
    `resnet` block a small CNN instead of the ResNet-18 (whose compilation alone would take the
    test's time, as in `tests.experiments.checks.tiny`); 5 calibration steps, 3 evaluations each."""
    config = get_config()
    config.epochs = 2
    config.data.data_dir = digits_dir
    config.calibration_steps = 5
    config.evaluations = 3
    config.vit.model_options.update({"width": 32, "depth": 2, "num_heads": 2, "mlp_dim": 64})
    config.resnet.model = "small_cnn"
    config.resnet.model_options = {"widths": (8, 16, 32)}
    config.resnet.conv_impl = "xla"
    config.update_from_flattened_dict(changes)
    return config


class FakeClock:
    """A clock that advances by `TICK` at every reading: every timed step and compilation lasts one tick."""

    def __init__(self):
        self.readings = 0

    def __call__(self) -> float:
        self.readings += 1
        return self.readings * TICK


def rows(results):
    return {row["model"]: row for row in results["rows"]}


def evaluations(workdir):
    return [record for record in read_metrics(workdir) if record["split"] == "eval"]


@pytest.fixture(scope="module")
def compared(tmp_path_factory, digits_dir):
    workdir = tmp_path_factory.mktemp("vit")
    return vit.train_and_evaluate(tiny(digits_dir), str(workdir)), workdir


def test_both_models_train_above_chance_and_write_the_table(compared):
    results, workdir = compared
    assert json.loads((workdir / "results.json").read_text()) == results
    table = rows(results)
    assert list(table) == ["vit", "resnet"]
    assert (table["vit"]["architecture"], table["resnet"]["architecture"]) == ("vit_tiny_16", "small_cnn")
    assert table["vit"]["steps"] == 22 and table["vit"]["epochs"] == 2.0 and results["steps_per_epoch"] == 11
    for name, row in table.items():
        assert row["test accuracy"] > 0.4, (name, row)  # ten classes: chance is 0.1
        assert results["test_accuracy"][name] == row["test accuracy"]
        # the table's test accuracy is the final evaluation of that model's own run
        final = evaluations(workdir / name)[-1]
        assert (final["step"], final["accuracy"], final["loss"]) == (row["steps"], row["test accuracy"], row["test loss"])
        assert json.loads((workdir / name / "config.json").read_text())["num_steps"] == row["steps"]
    # 4 patches of 4×4 pixels, width 32, 2 blocks: the ViT's parameters counted by hand
    block = 2 * 2 * 32 + (3 * 32 * 32 + 3 * 32) + (32 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32)
    embedding = 4 * 4 * 1 * 32 + 32 + 32 + 5 * 32  # patches, bias, class token, positions
    assert table["vit"]["parameters"] == embedding + 2 * block + 2 * 32 + (32 * 10 + 10)


def test_the_resnet_trains_for_the_seconds_the_vit_took(compared):
    """Budget B = the ViT's measured training seconds; the ResNet's steps n = max(1, ⌊B / s⌋) with s
    its calibrated seconds per step; every evaluation records the training seconds so far."""
    results, workdir = compared
    table = rows(results)
    budget = results["budget_seconds"]
    assert results["budget_from"] == "vit 2 epochs"
    assert budget == table["vit"]["training seconds"] and table["vit"]["seconds / budget"] == 1.0
    resnet = table["resnet"]
    assert resnet["steps"] == max(1, math.floor(budget / resnet["seconds per step"]))
    assert resnet["seconds / budget"] == pytest.approx(resnet["training seconds"] / budget, rel=1e-12)
    for name, row in table.items():
        records = evaluations(workdir / name)
        seconds = [record["seconds"] for record in records]
        every = max(1, row["steps"] // 3)  # 3 evaluations: every ⌊n / 3⌋ steps, and at the end
        assert [record["step"] for record in records] == sorted({*range(every, row["steps"], every), row["steps"]})
        assert all(later > earlier for earlier, later in itertools.pairwise(seconds))
        assert seconds[-1] == row["training seconds"] and row["compile seconds"] > 0


def test_equal_seconds_under_a_fake_clock(tmp_path, digits_dir):
    """With every step lasting one tick, a budget of 22.5 ticks gives each model ⌊22.5⌋ = 22 steps of
    exactly 22 ticks (the ViT's programs are those of `compared`: the compilation cache has them)."""
    config = tiny(digits_dir, calibration_steps=1, evaluations=1, time_budget_seconds=22.5 * TICK)
    results = vit.train_and_evaluate(config, str(tmp_path), clock=FakeClock())
    assert results["budget_from"] == "time_budget_seconds" and results["budget_seconds"] == 22.5 * TICK
    for name, row in rows(results).items():
        assert (row["seconds per step"], row["steps"], row["compile seconds"]) == (TICK, 22, TICK), name
        assert row["training seconds"] == 22 * TICK and row["seconds / budget"] == 22 / 22.5
        assert [(record["step"], record["seconds"]) for record in evaluations(tmp_path / name)] == [(22, 22 * TICK)]


@pytest.mark.parametrize("budget, seconds_per_step, steps", [
    (10.0, 3.0, 3), (10.0, 2.5, 4), (0.3, 0.1, 3), (0.7, 0.1, 7), (1.0, 5.0, 1), (59.9, 0.2, 299)])
def test_planned_steps_are_the_whole_steps_that_fit(budget, seconds_per_step, steps):
    # 0.3 / 0.1 = 2.9999999999999996 and 0.7 / 0.1 = 6.999999999999999 in floating point
    assert vit.planned_steps(budget, seconds_per_step) == steps


def test_the_timed_step_keeps_compilation_apart_and_the_values_unchanged():
    data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:2]))
    readings = iter([10.0, 12.5, 13.0, 13.25, 20.0, 20.75])  # compile 2.5 s, then steps of 0.25 s and 0.75 s
    timed = vit.TimedDataParallel.of(data_parallel, lambda: next(readings))

    def per_device_step(state, batch):
        return state + lax.psum(jnp.sum(batch), parallel.DATA_AXIS), {"mean": lax.pmean(jnp.mean(batch), parallel.DATA_AXIS)}

    step = timed.step(per_device_step)
    state = timed.put_state(jnp.float32(1.0))
    for batch in (np.arange(4, dtype=np.float32), np.full(4, 2.0, np.float32)):
        state, metrics = step(state, timed.put_batch(batch))
    assert float(state) == 1.0 + 6.0 + 8.0 and float(metrics["mean"]) == 2.0
    assert timed.times.compile_seconds == 2.5 and timed.times.step_seconds == [0.25, 0.75]
    assert timed.times.training_seconds == 1.0


def test_the_plot_draws_both_models_in_both_panels(compared):
    _, workdir = compared
    image = np.asarray(Image.open(workdir / "curves.png").convert("RGB")).astype(int)
    assert image.shape[1] > 2 * image.shape[0]  # two panels side by side
    halves = image[:, : image.shape[1] // 2], image[:, image.shape[1] // 2 :]
    for colour in ((31, 119, 180), (255, 127, 14)):  # matplotlib's first two line colours: vit, resnet
        for half in halves:
            assert np.sum(np.all(np.abs(half - colour) < 10, axis=-1)) > 100, colour
    assert sorted(path.name for path in workdir.glob("*.png")) == ["curves.png"]


def test_a_finished_comparison_is_not_resumed(compared, digits_dir):
    _, workdir = compared
    before = (workdir / "results.json").read_text()
    with pytest.raises(UserError, match="already holds a comparison .*timings cannot be resumed"):
        vit.train_and_evaluate(tiny(digits_dir), str(workdir))
    assert (workdir / "results.json").read_text() == before


@pytest.mark.parametrize("flag, message", [
    ("--config.resnet.model=resnet19", "unknown model 'resnet19'"),
    ("--config.vit.model=vit_huge_14", "unknown model 'vit_huge_14'"),
    ("--config.time_budget_seconds=0", "time_budget_seconds=0.0 must be positive"),
    ("--config.time_budget_seconds=-30", "time_budget_seconds=-30.0 must be positive"),
    ("--config.vit.model_options.patch_size=3", "ViT with patch_size 3 needs an image size divisible by 3, not 8×8"),
    ("--config.evaluations=0", "evaluations=0 must be >= 1"),
])
def test_bad_flags_fail_with_one_line(flag, message, tmp_path, digits_dir, capsys):
    assert_command_line_error(vit, [flag, f"--config.data.data_dir={digits_dir}"], tmp_path / "run", message, capsys)

