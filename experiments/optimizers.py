"""Lecture 7: the same two-layer network trained on digits with each hand-written optimizer.

    python -m experiments.optimizers [--config=experiments/configs/optimizers.py]
        [--config.key=value ...] [--workdir=runs/optimizers]

Left: minibatch training of `visionax.models.two_layer.TwoLayerNet` with SGD, momentum, Nesterov,
AdaGrad, RMSProp, Adam and LARS (`visionax.optim`), each under the same learning-rate schedule
shape with its own peak, the same initialisation and the same batches; the Polyak average (EMA)
of the parameters is evaluated beside the last iterate. Right: the full-batch problem that
second-order methods suit, a softmax classifier fitted by L-BFGS (`optax.lbfgs`) and by Newton's
method (`jax.hessian`). Writes `loss_curves.png` (both panels side by side) and `summary.json` to
the workdir and prints a table of final loss and accuracy.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from visionax import cli, data, optim
from visionax.data.preprocess import fit_mean_image
from visionax.errors import UserError
from visionax.losses.classification import softmax_cross_entropy
from visionax.models.two_layer import TwoLayerNet
from visionax.train.optimizer import create_optimizer, schedule

NAME = "optimizers"
DEFAULT_CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def _validate(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    names = tuple(name.strip() for name in str(config.optimizers).split(",") if name.strip())
    if not names:
        raise UserError(f"config.optimizers is empty; set --config.optimizers={','.join(optim.OPTIMIZERS)}")
    for name in names:
        if name not in optim.OPTIMIZERS:
            raise UserError(
                f"unknown optimizer {name!r} in config.optimizers; use a comma-separated subset of "
                f"{','.join(optim.OPTIMIZERS)}"
            )
        if name not in config.learning_rates:
            raise UserError(f"no learning rate for {name!r}; set --config.learning_rates.{name}=<value>")
    for key in ("hidden", "batch_size", "epochs"):
        if config[key] < 1:
            raise UserError(f"{key} must be ≥ 1, got {config[key]}; set --config.{key} to a positive integer")
    for key in ("lbfgs_steps", "newton_steps"):
        if config[key] < 1:
            raise UserError(f"{key} must be ≥ 1, got {config[key]}; set --config.{key} to a positive integer")
    if not 0 <= config.polyak_decay < 1:
        raise UserError(f"polyak_decay must be in [0, 1), got {config.polyak_decay}; set --config.polyak_decay=0.99")
    return names


def load_split(spec: data.DatasetSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = data.as_arrays(data.data_source(spec, split))
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def accuracy(logits: jax.Array, labels: jax.Array) -> float:
    return float(jnp.mean(jnp.argmax(logits, axis=-1) == labels))


def train_network(name, config, model, variables, x_train, y_train, key):
    """Minibatch training with optimizer `name`; returns (params, Polyak params, loss of each step)."""
    steps_per_epoch = x_train.shape[0] // config.batch_size
    if steps_per_epoch < 1:
        raise UserError(f"batch_size {config.batch_size} exceeds the {x_train.shape[0]} training examples; lower it")
    total = steps_per_epoch * config.epochs
    learning_rate = schedule(
        config.schedule, float(config.learning_rates[name]), total_steps=total,
        warmup_steps=steps_per_epoch * config.warmup_epochs,
    )
    tx = create_optimizer(name, learning_rate, weight_decay=config.weight_decay)
    averager = optim.polyak_average(config.polyak_decay)

    def loss_fn(params, x, y):
        return softmax_cross_entropy(model.apply({"params": params}, x), y)

    def step(carry, batch):
        params, opt_state, ema = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, opt_state, averager.update(params, ema)), loss

    @jax.jit
    def epoch(carry, epoch_key):
        order = jax.random.permutation(epoch_key, x_train.shape[0])[: steps_per_epoch * config.batch_size]
        xs = x_train[order].reshape((steps_per_epoch, config.batch_size) + x_train.shape[1:])
        ys = y_train[order].reshape(steps_per_epoch, config.batch_size)
        return jax.lax.scan(step, carry, (xs, ys))

    params = variables["params"]
    carry = (params, tx.init(params), averager.init(params))
    losses = []
    for index in range(config.epochs):
        carry, epoch_losses = epoch(carry, jax.random.fold_in(key, index))
        losses.append(np.asarray(epoch_losses))
        if not np.all(np.isfinite(losses[-1])):
            raise UserError(
                f"{name} loss became non-finite in epoch {index + 1}; lower --config.learning_rates.{name}"
            )
    params, _, ema = carry
    return params, ema.params, np.concatenate(losses)


def fit_full_batch(config, x_train, y_train, num_classes):
    """A softmax classifier on the whole training set by L-BFGS and by Newton's method.

    Returns {method: (params, loss before each iteration, final loss)} and the loss function.
    """
    l2 = float(config.l2)

    def loss_fn(params):
        logits = x_train @ params["W"] + params["b"]
        penalty = jnp.sum(params["W"] ** 2) + jnp.sum(params["b"] ** 2)
        return softmax_cross_entropy(logits, y_train) + 0.5 * l2 * penalty

    zeros = {"W": jnp.zeros((x_train.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    lbfgs = jax.jit(lambda p: optim.lbfgs_minimize(loss_fn, p, max_steps=config.lbfgs_steps, tol=1e-6))(zeros)
    lbfgs_losses = np.asarray(lbfgs.losses[: int(lbfgs.num_steps)])
    newton_params, newton_losses = jax.jit(
        lambda p: optim.newton(loss_fn, p, num_steps=config.newton_steps)
    )(zeros)
    return {
        "lbfgs": (lbfgs.params, lbfgs_losses, float(loss_fn(lbfgs.params))),
        "newton": (newton_params, np.asarray(newton_losses), float(loss_fn(newton_params))),
    }


def plot(curves: dict[str, np.ndarray], steps_per_epoch: int, full_batch: dict, path: pathlib.Path) -> None:
    """Left: training loss of each optimizer (mean over each epoch); right: full-batch L-BFGS and Newton."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for index, (name, losses) in enumerate(curves.items()):
        per_epoch = losses[: len(losses) // steps_per_epoch * steps_per_epoch].reshape(-1, steps_per_epoch).mean(1)
        # Line styles tell apart the curves that coincide (momentum and Nesterov often do).
        style = ("-", "--", ":", "-.")[index % 4]
        left.semilogy(np.arange(1, len(per_epoch) + 1), per_epoch, style, label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (mean over the epoch)")
    left.set_title("Two-layer network, minibatch training")
    left.legend(fontsize=8)
    best = min(final for _, _, final in full_batch.values())
    for name, (_, losses, final) in full_batch.items():
        gap = np.append(losses, final) - best
        right.semilogy(np.arange(len(gap)), np.maximum(gap, 1e-8), marker="o", markersize=3, label=name)
    right.set_xlabel("iteration")
    right.set_ylabel("loss − best loss (floored at 1e-8)")
    right.set_title("Softmax classifier, full batch")
    right.legend(fontsize=8)
    fig.suptitle("Optimizers on digits")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    names = _validate(config)
    workdir_path = pathlib.Path(workdir)
    spec = data.DatasetSpec.from_config(config.data)
    (x_train, y_train), (x_test, y_test) = load_split(spec, "train"), load_split(spec, "test")
    num_classes = data.num_classes(spec)
    centre = fit_mean_image(x_train)  # fitted on train, applied to both
    x_train = jnp.asarray(centre(x_train).reshape(len(x_train), -1))
    x_test = jnp.asarray(centre(x_test).reshape(len(x_test), -1))
    y_train, y_test = jnp.asarray(y_train), jnp.asarray(y_test)
    steps_per_epoch = x_train.shape[0] // config.batch_size

    key = jax.random.key(config.seed)
    model = TwoLayerNet(hidden=config.hidden, num_classes=num_classes)
    variables = model.init(jax.random.fold_in(key, 0), x_train[:1])
    apply = jax.jit(lambda params, x: model.apply({"params": params}, x))

    results: dict[str, dict[str, float]] = {}
    curves: dict[str, np.ndarray] = {}
    for name in names:
        # The same initialisation and the same batches for every optimizer.
        params, ema, losses = train_network(
            name, config, model, variables, x_train, y_train, jax.random.fold_in(key, 1)
        )
        curves[name] = losses
        train_logits = apply(params, x_train)
        results[name] = {
            "learning_rate": float(config.learning_rates[name]),
            "final_loss": float(softmax_cross_entropy(train_logits, y_train)),
            "train_accuracy": accuracy(train_logits, y_train),
            "test_accuracy": accuracy(apply(params, x_test), y_test),
            "polyak_test_accuracy": accuracy(apply(ema, x_test), y_test),
        }

    full_batch = fit_full_batch(config, x_train, y_train, num_classes)
    for method, (params, losses, final) in full_batch.items():
        results[f"{method} (softmax, full batch)"] = {
            "iterations": int(len(losses)),
            "final_loss": final,
            "train_accuracy": accuracy(x_train @ params["W"] + params["b"], y_train),
            "test_accuracy": accuracy(x_test @ params["W"] + params["b"], y_test),
        }

    workdir_path.mkdir(parents=True, exist_ok=True)
    plot(curves, steps_per_epoch, full_batch, workdir_path / "loss_curves.png")
    summary = {
        "results": results,
        "train_examples": int(len(y_train)),
        "test_examples": int(len(y_test)),
        "epochs": int(config.epochs),
        "schedule": str(config.schedule),
    }
    (workdir_path / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"{'optimizer':<30}{'final loss':>12}{'train acc':>12}{'test acc':>12}{'Polyak test':>13}")
    for name, row in results.items():
        polyak = f"{row['polyak_test_accuracy']:>13.2%}" if "polyak_test_accuracy" in row else f"{'':>13}"
        print(
            f"{name:<30}{row['final_loss']:>12.4f}{row['train_accuracy']:>12.2%}"
            f"{row['test_accuracy']:>12.2%}{polyak}"
        )
    print("final loss: training cross-entropy of the final parameters (full batch: + l2 penalty)")
    print(f"plot: {workdir_path / 'loss_curves.png'}")
    return summary


def main(argv=None):
    return cli.run(train_and_evaluate, DEFAULT_CONFIG, NAME, argv)


if __name__ == "__main__":
    main()
