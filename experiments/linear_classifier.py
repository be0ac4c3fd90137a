"""Lecture 3: a multiclass SVM and a softmax linear classifier on digits, trained by minibatch SGD.

    python -m experiments.linear_classifier [--config=experiments/configs/linear_classifier.py]
        [--config.key=value ...] [--workdir=runs/linear_classifier]

Scores are s = W x + b on the flattened images (the embedded 8×8 digits by default, or any image
folder), scaled to [0, 1] and centred by the mean image of the training set. The loss is the data
loss (`svm_hinge` or `softmax_cross_entropy`) plus λ·l2(W), and each step is W ← W − η ∇ on a
minibatch. Writes to the workdir `weights.png` (the learned weights
of each class shown as an image, one row per classifier, as in the lecture), `loss.png` and
`summary.json`, and prints a summary table.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax import cli, data
from visionax.data.preprocess import fit_mean_image
from visionax.errors import UserError
from visionax.losses.classification import softmax_cross_entropy, svm_hinge
from visionax.losses.penalties import l2

NAME = "linear_classifier"
DEFAULT_CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
LOSSES = ("svm", "softmax")


def load_split(spec: data.DatasetSpec, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A whole split as float images in [0, 1] (N, H, W, C) and int labels (N,)."""
    images, labels = data.as_arrays(data.data_source(spec, split))
    return images.astype(np.float32) / 255.0, labels.astype(np.int32)


def _validate(config: ml_collections.ConfigDict) -> tuple[str, ...]:
    losses = tuple(name.strip() for name in str(config.losses).split(",") if name.strip())
    for name in losses:
        if name not in LOSSES:
            raise UserError(f"unknown loss {name!r} in config.losses; use a comma-separated subset of {','.join(LOSSES)}")
    if not losses:
        raise UserError("config.losses is empty; set --config.losses=svm,softmax")
    if config.learning_rate <= 0:
        raise UserError(f"learning_rate must be positive, got {config.learning_rate}; set --config.learning_rate=0.5")
    if config.weight_decay < 0:
        raise UserError(f"weight_decay must be ≥ 0, got {config.weight_decay}; set --config.weight_decay=1e-4")
    if config.batch_size < 1:
        raise UserError(f"batch_size must be ≥ 1, got {config.batch_size}; set --config.batch_size=64")
    if config.epochs < 1:
        raise UserError(f"epochs must be ≥ 1, got {config.epochs}; set --config.epochs=60")
    return losses


def data_loss_fn(name: str, margin: float):
    if name == "svm":
        return lambda scores, labels: svm_hinge(scores, labels, margin)
    return softmax_cross_entropy


def train_linear(name: str, config, x_train, y_train, num_classes: int, key):
    """Minibatch SGD on data loss + λ·l2(W); returns the params and the mean training loss of each epoch."""
    data_loss = data_loss_fn(name, config.svm_margin)
    x_train, y_train = jnp.asarray(x_train, jnp.float32), jnp.asarray(y_train, jnp.int32)
    dim = x_train.shape[1]
    params = {"W": 1e-3 * jax.random.normal(jax.random.fold_in(key, 0), (dim, num_classes)), "b": jnp.zeros(num_classes)}
    steps = x_train.shape[0] // config.batch_size
    if steps < 1:
        raise UserError(f"batch_size {config.batch_size} exceeds the {x_train.shape[0]} training examples; lower it")
    lr, lam = float(config.learning_rate), float(config.weight_decay)

    def loss_fn(p, x, y):
        return data_loss(x @ p["W"] + p["b"], y) + lam * l2(p)

    def step(p, batch):
        x, y = batch
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        return jax.tree.map(lambda w, g: w - lr * g, p, grads), loss

    @jax.jit
    def epoch(p, epoch_key):
        order = jax.random.permutation(epoch_key, x_train.shape[0])[: steps * config.batch_size]
        xs = x_train[order].reshape(steps, config.batch_size, dim)
        ys = y_train[order].reshape(steps, config.batch_size)
        p, losses = jax.lax.scan(step, p, (xs, ys))
        return p, jnp.mean(losses)

    history = []
    for index in range(config.epochs):
        params, loss = epoch(params, jax.random.fold_in(key, index + 1))
        history.append(float(loss))
        if not np.isfinite(history[-1]):
            raise UserError(f"{name} loss became {history[-1]} at epoch {index + 1}; lower --config.learning_rate")
    return params, history


def accuracy(params, x, y) -> float:
    return float(jnp.mean(jnp.argmax(x @ params["W"] + params["b"], axis=-1) == y))


def plot_weights(weights: dict[str, np.ndarray], image_shape, path: pathlib.Path) -> None:
    """One row per classifier, one image per class: W's column as an image, rescaled to [0, 255] over the classifier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    num_classes = next(iter(weights.values())).shape[1]
    fig, axes = plt.subplots(
        len(weights), num_classes, figsize=(1.2 * num_classes, 1.6 * len(weights) + 0.4), squeeze=False
    )
    for row, (name, w) in enumerate(weights.items()):
        images = w.T.reshape((num_classes,) + tuple(image_shape))
        images = (255.0 * (images - images.min()) / (images.max() - images.min() + 1e-12)).astype(np.uint8)
        if images.shape[-1] == 1:
            images = images[..., 0]
        for cls in range(num_classes):
            ax = axes[row, cls]
            ax.imshow(images[cls], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(cls), fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=10)
    fig.suptitle("Learned weights of each class (linear classifiers)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_losses(histories: dict[str, list[float]], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, history in histories.items():
        ax.plot(range(1, len(history) + 1), history, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (data + λ·L2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    losses = _validate(config)
    workdir_path = pathlib.Path(workdir)
    spec = data.DatasetSpec.from_config(config.data)
    (x_train, y_train), (x_test, y_test) = load_split(spec, "train"), load_split(spec, "test")
    num_classes = data.num_classes(spec)
    image_shape = x_train.shape[1:]
    centre = fit_mean_image(x_train)  # fitted on train, applied to both
    x_train = centre(x_train).reshape(len(x_train), -1)
    x_test = centre(x_test).reshape(len(x_test), -1)
    y_train, y_test = jnp.asarray(y_train), jnp.asarray(y_test)

    key = jax.random.key(config.seed)
    results, weights, histories = {}, {}, {}
    for index, name in enumerate(losses):
        params, history = train_linear(name, config, x_train, y_train, num_classes, jax.random.fold_in(key, index))
        weights[name] = np.asarray(params["W"])
        histories[name] = history
        results[name] = {
            "final_loss": history[-1],
            "train_accuracy": accuracy(params, x_train, y_train),
            "test_accuracy": accuracy(params, x_test, y_test),
        }

    workdir_path.mkdir(parents=True, exist_ok=True)
    plot_weights(weights, image_shape, workdir_path / "weights.png")
    plot_losses(histories, workdir_path / "loss.png")
    summary = {"results": results, "train_examples": int(len(y_train)), "test_examples": int(len(y_test))}
    (workdir_path / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"{'classifier':<12}{'final loss':>12}{'train acc':>12}{'test acc':>12}")
    for name, row in results.items():
        print(f"{name:<12}{row['final_loss']:>12.4f}{row['train_accuracy']:>12.2%}{row['test_accuracy']:>12.2%}")
    print(f"weights: {workdir_path / 'weights.png'}")
    return summary


def main(argv=None):
    return cli.run(train_and_evaluate, DEFAULT_CONFIG, NAME, argv)


if __name__ == "__main__":
    main()
