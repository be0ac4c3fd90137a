"""Lecture 7: activation statistics through a deep MLP under small random, Xavier and Kaiming init.

A batch x ~ N(0, 1) goes through `depth` layers h ← act(h W), W from each initializer (no bias, as
in the lecture), and the mean and std of every layer's activations are printed and plotted: small
random weights make tanh and ReLU activations vanish, Xavier keeps tanh alive but makes ReLU shrink
by about √2 a layer, and Kaiming keeps ReLU's scale constant. A study, not a training run: it writes
`config.json`, `activations.png` (per-layer distributions and std) and `results.json` (the mean and
std of every layer, per activation and init).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections
import numpy as np

from visionax import cli, registry, report
from visionax.errors import UserError, require_positive
from visionax.layers import activations, init
from visionax.train import checkpoint

NAME = "init_study"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
ACTIVATIONS = {"tanh": activations.tanh, "relu": activations.relu}
INITS = {
    "small_random": lambda config: init.small_random(config.small_std),
    "xavier": lambda config: init.xavier(),
    "kaiming": lambda config: init.kaiming(),
}
LABELS = {"small_random": "small random", "xavier": "Xavier", "kaiming": "Kaiming"}


def check(config: ml_collections.ConfigDict) -> None:
    require_positive(config, ("depth", "width", "batch_size"))
    if config.small_std <= 0:
        raise UserError(f"small_std must be positive, got {config.small_std}; set --config.small_std=0.01")


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def layer_activations(key: jax.Array, act, initializer, depth: int, width: int, batch: int) -> jax.Array:
    """Activations `[depth, batch, width]` of h_l = act(h_{l−1} W_l), h_0 = x ~ N(0, 1), W_l = initializer(...)."""
    key_x, key_w = jax.random.split(key)
    x = jax.random.normal(key_x, (batch, width))
    weights = jax.vmap(lambda k: initializer(k, (width, width)))(jax.random.split(key_w, depth))

    def layer(h, w):
        h = act(h @ w)
        return h, h

    _, hs = jax.lax.scan(layer, x, weights)
    return hs


def plot(stats: dict, samples: dict, path: pathlib.Path) -> pathlib.Path:
    """One row per activation with a box plot of the per-layer distributions per init; last row:
    the std per layer (log scale)."""
    acts = list(stats)
    inits = list(next(iter(stats.values())))
    fig, axes = report.figure(len(acts) + 1, len(inits), panel_size=(4.2, 3.0))
    for row, act in enumerate(acts):
        for col, name in enumerate(inits):
            axis = axes[row, col]
            axis.boxplot(list(samples[act][name]), whis=(1, 99), showfliers=False)
            axis.set_title(f"{act}, {LABELS[name]} init", fontsize=10)
            axis.set_xlabel("layer")
            if col == 0:
                axis.set_ylabel("activation (1–99 %)")
            if act == "tanh":
                axis.set_ylim(-1.05, 1.05)
    for col in range(len(inits)):
        axis = axes[-1, col]
        if col >= len(acts):
            axis.axis("off")
            continue
        for name in inits:
            std = stats[acts[col]][name]["std"]
            axis.semilogy(range(1, len(std) + 1), np.maximum(std, 1e-30), marker="o", label=LABELS[name])
        axis.set_title(f"{acts[col]}: activation std per layer", fontsize=10)
        axis.set_xlabel("layer")
        axis.set_ylabel("std")
        axis.legend(fontsize=8)
    return report.save(fig, path, title="Activations through a deep MLP under three initialisations", dpi=90)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Compute, print and plot per-layer activation mean/std (no training: the study is at initialisation)."""
    acts = registry.lookup_many(ACTIVATIONS, config.activations, "activation", "activations")
    inits = registry.lookup_many(INITS, config.inits, "initializer", "inits")
    check(config)
    checkpoint.claim_workdir(workdir, config)
    key = jax.random.key(config.seed)
    stats, samples, rows = {}, {}, []
    for act_name, act in acts.items():
        stats[act_name], samples[act_name] = {}, {}
        for init_name, make in inits.items():
            # The same inputs and Gaussian draws for every init and activation: only the scale differs.
            hs = layer_activations(key, act, make(config), config.depth, config.width, config.batch_size)
            flat = np.asarray(hs).reshape(config.depth, -1)
            stats[act_name][init_name] = {"mean": flat.mean(axis=1), "std": flat.std(axis=1)}
            pick = np.random.default_rng(0).choice(flat.shape[1], size=min(flat.shape[1], 20000), replace=False)
            samples[act_name][init_name] = flat[:, pick]
            rows += [[act_name, init_name, statistic, *map(float, stats[act_name][init_name][statistic])]
                     for statistic in ("mean", "std")]
    table = report.Table(f"activations of {config.depth}-layer MLPs of width {config.width}",
                         ["activation", "init", "statistic", *(f"layer {layer}" for layer in range(1, config.depth + 1))],
                         rows)
    plots = [plot(stats, samples, pathlib.Path(workdir) / "activations.png")]
    return report.finish(workdir, table, plots=plots)


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
