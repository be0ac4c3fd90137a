"""Lecture 7: activation statistics through a deep MLP under small random, Xavier and Kaiming init.

    python -m experiments.init_study [--config=experiments/configs/init_study.py]
        [--config.key=value ...] [--workdir=runs/init_study]

A batch x ~ N(0, 1) goes through `depth` layers h ← act(h W), W from each initializer (no bias,
as in the lecture), and the mean and std of every layer's activations are printed and plotted —
small random weights make tanh and ReLU activations vanish, Xavier keeps tanh alive but makes
ReLU shrink by about √2 a layer, and Kaiming keeps ReLU's scale constant. Writes
`activations.png` (per-layer distributions and std) and `stats.json` to the workdir.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from visionax import cli
from visionax.errors import UserError
from visionax.layers import activations, init

NAME = "init_study"
DEFAULT_CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
ACTIVATIONS = {"tanh": activations.tanh, "relu": activations.relu}
INITS = {
    "small_random": lambda config: init.small_random(config.small_std),
    "xavier": lambda config: init.xavier(),
    "kaiming": lambda config: init.kaiming(),
}
LABELS = {"small_random": "small random", "xavier": "Xavier", "kaiming": "Kaiming"}


def _names(text: str, allowed, key: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in str(text).split(",") if name.strip())
    if not names:
        raise UserError(f"config.{key} is empty; set --config.{key}={','.join(allowed)}")
    for name in names:
        if name not in allowed:
            raise UserError(f"unknown {key[:-1]} {name!r} in config.{key}; use a comma-separated subset of {','.join(allowed)}")
    return names


def _validate(config) -> tuple[tuple[str, ...], tuple[str, ...]]:
    for key in ("depth", "width", "batch_size"):
        if config[key] < 1:
            raise UserError(f"{key} must be ≥ 1, got {config[key]}; set --config.{key} to a positive integer")
    if config.small_std <= 0:
        raise UserError(f"small_std must be positive, got {config.small_std}; set --config.small_std=0.01")
    return _names(config.activations, ACTIVATIONS, "activations"), _names(config.inits, INITS, "inits")


def layer_activations(key: jax.Array, act, initializer, depth: int, width: int, batch: int) -> jax.Array:
    """Activations (depth, batch, width) of h_l = act(h_{l−1} W_l), h_0 = x ~ N(0, 1), W_l = initializer(...)."""
    key_x, key_w = jax.random.split(key)
    x = jax.random.normal(key_x, (batch, width))
    weights = jax.vmap(lambda k: initializer(k, (width, width)))(jax.random.split(key_w, depth))

    def layer(h, w):
        h = act(h @ w)
        return h, h

    _, hs = jax.lax.scan(layer, x, weights)
    return hs


def plot(stats: dict, samples: dict, path: pathlib.Path) -> None:
    """Rows: one per activation with one box plot of the per-layer distributions per init; last row: std per layer (log)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acts = list(stats)
    inits = list(next(iter(stats.values())))
    fig, axes = plt.subplots(len(acts) + 1, len(inits), figsize=(4.2 * len(inits), 3.0 * (len(acts) + 1)), squeeze=False)
    for row, act in enumerate(acts):
        for col, name in enumerate(inits):
            ax = axes[row, col]
            data = samples[act][name]
            ax.boxplot(list(data), whis=(1, 99), showfliers=False)
            ax.set_title(f"{act}, {LABELS.get(name, name)} init", fontsize=10)
            ax.set_xlabel("layer")
            if col == 0:
                ax.set_ylabel("activation (1–99 %)")
            if act == "tanh":
                ax.set_ylim(-1.05, 1.05)
    for col in range(len(inits)):
        ax = axes[-1, col]
        if col < len(acts):
            act = acts[col]
            for name in inits:
                std = stats[act][name]["std"]
                ax.semilogy(range(1, len(std) + 1), np.maximum(std, 1e-30), marker="o", label=LABELS.get(name, name))
            ax.set_title(f"{act}: activation std per layer", fontsize=10)
            ax.set_xlabel("layer")
            ax.set_ylabel("std")
            ax.legend(fontsize=8)
        else:
            ax.axis("off")
    fig.suptitle("Activations through a deep MLP under three initialisations")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Compute, print and plot per-layer activation mean/std (no training: the study is at initialisation)."""
    acts, inits = _validate(config)
    key = jax.random.key(config.seed)
    stats: dict[str, dict[str, dict[str, list[float]]]] = {}
    samples: dict[str, dict[str, np.ndarray]] = {}
    for act in acts:
        stats[act], samples[act] = {}, {}
        for name in inits:
            # The same inputs and Gaussian draws for every init and activation: only the scale differs.
            hs = jax.jit(layer_activations, static_argnums=(1, 2, 3, 4, 5))(
                key, ACTIVATIONS[act], INITS[name](config), config.depth, config.width, config.batch_size
            )
            flat = np.asarray(hs).reshape(config.depth, -1)
            stats[act][name] = {
                "mean": [float(v) for v in flat.mean(axis=1)],
                "std": [float(v) for v in flat.std(axis=1)],
            }
            pick = np.random.default_rng(0).choice(flat.shape[1], size=min(flat.shape[1], 20000), replace=False)
            samples[act][name] = flat[:, pick]

    for act in acts:
        for name in inits:
            print(f"{act} / {LABELS[name]} init (width {config.width}, {config.depth} layers)")
            print("  layer " + "".join(f"{layer:>10d}" for layer in range(1, config.depth + 1)))
            print("  mean  " + "".join(f"{v:>10.2e}" for v in stats[act][name]["mean"]))
            print("  std   " + "".join(f"{v:>10.2e}" for v in stats[act][name]["std"]))

    workdir_path = pathlib.Path(workdir)
    workdir_path.mkdir(parents=True, exist_ok=True)
    plot(stats, samples, workdir_path / "activations.png")
    (workdir_path / "stats.json").write_text(json.dumps(stats, indent=2))
    print(f"plot: {workdir_path / 'activations.png'}")
    return stats


def main(argv=None):
    return cli.run(train_and_evaluate, DEFAULT_CONFIG, NAME, argv)


if __name__ == "__main__":
    main()
