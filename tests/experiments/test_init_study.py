"""`python -m experiments.init_study`: the vanishing/exploding picture of lecture 7, in numbers."""

import json

import numpy as np
import pytest
from PIL import Image

from experiments import init_study
from experiments.configs.init_study import get_config
from visionax.errors import UserError


def statistics(results: dict) -> dict:
    """{activation: {init: {"mean": [per layer], "std": [per layer]}}} from results.json's rows."""
    stats = {}
    for row in results["rows"]:
        layers = [row[f"layer {layer}"] for layer in range(1, len(row) - 2)]
        stats.setdefault(row["activation"], {}).setdefault(row["init"], {})[row["statistic"]] = layers
    return stats


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    config = get_config()
    config.width = 256
    config.batch_size = 128
    workdir = tmp_path_factory.mktemp("init_study")
    return statistics(init_study.train_and_evaluate(config, str(workdir))), workdir


def test_writes_results_config_and_plot(study):
    stats, workdir = study
    assert set(stats) == {"tanh", "relu"}
    assert all(set(per_act) == {"small_random", "xavier", "kaiming"} for per_act in stats.values())
    assert all(len(s["std"]) == 10 and len(s["mean"]) == 10 for per_act in stats.values() for s in per_act.values())
    results = json.loads((workdir / "results.json").read_text())
    assert statistics(results) == stats
    assert results["columns"][:3] == ["activation", "init", "statistic"]
    assert json.loads((workdir / "config.json").read_text())["width"] == 256
    image = np.asarray(Image.open(workdir / "activations.png"))
    assert image.shape[0] > 400 and image.std() > 10


def test_the_lecture_picture(study):
    stats, _ = study
    std = {(act, name): np.array(s["std"]) for act, per_act in stats.items() for name, s in per_act.items()}
    # Small random weights: activations vanish for both nonlinearities.
    assert std["tanh", "small_random"][-1] < 1e-3 * std["tanh", "small_random"][0]
    assert std["relu", "small_random"][-1] < 1e-3 * std["relu", "small_random"][0]
    # Xavier keeps tanh alive ...
    assert std["tanh", "xavier"][-1] > 0.15
    # ... but ReLU halves the variance each layer: std shrinks by about √2 per layer.
    ratio = std["relu", "xavier"][-1] / std["relu", "xavier"][0]
    assert 0.3 * 2 ** (-4.5) < ratio < 3 * 2 ** (-4.5)
    # Kaiming keeps ReLU's scale.
    assert 0.6 < std["relu", "kaiming"][-1] / std["relu", "kaiming"][0] < 1.6
    # tanh activations are zero-centred.
    assert all(abs(m) < 0.05 for name in ("xavier", "kaiming") for m in stats["tanh"][name]["mean"])


def test_bad_names_are_user_errors(tmp_path):
    config = get_config()
    config.inits = "xavier,glorot"
    with pytest.raises(UserError, match="unknown initializer 'glorot' in config.inits"):
        init_study.train_and_evaluate(config, str(tmp_path / "x"))
    config = get_config()
    config.depth = 0
    with pytest.raises(UserError, match="depth=0 must be >= 1"):
        init_study.train_and_evaluate(config, str(tmp_path / "y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
