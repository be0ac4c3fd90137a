"""Lecture 3: a multiclass SVM and a softmax linear classifier on digits, trained by minibatch SGD.

Scores are s = W x + b on the flattened model input (the embedded 8×8 digits by default, or any
image folder) centred by the mean image of the training set. The loss is the data loss
(`svm_hinge` or `softmax_cross_entropy`) plus λ·R(W), and each step is W ← W − η ∇ on a minibatch,
through the shared supervised step and training loop (each classifier in `<workdir>/<loss>`, with
its own checkpoints). Writes `weights.png` (the learned weights of each class shown as an image, one
row per classifier, as in the lecture), `loss.png` and `results.json`.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections
import numpy as np

from visionax import cli, evaluate, registry, report
from visionax.data.preprocess import fit_mean_image, model_input
from visionax.models.linear import LinearClassifier
from visionax.train import checkpoint, loop, optimizer, setup, supervised
from visionax.train.metrics import last_record
from visionax.train.state import create_train_state

NAME = "linear_classifier"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def plot_weights(weights: dict[str, np.ndarray], image_shape, path: pathlib.Path) -> pathlib.Path:
    """One row per classifier, one image per class: W's column as an image, rescaled over the classifier."""
    num_classes = next(iter(weights.values())).shape[1]
    fig, axes = report.figure(len(weights), num_classes, panel_size=(1.2, 1.6))
    for row, (name, w) in enumerate(weights.items()):
        images = w.T.reshape((num_classes,) + tuple(image_shape))
        images = (images - images.min()) / (images.max() - images.min() + 1e-12)
        for cls in range(num_classes):
            axes[row, cls].imshow(images[cls].squeeze(-1) if images.shape[-1] == 1 else images[cls],
                                  cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            axes[row, cls].set_xticks([])
            axes[row, cls].set_yticks([])
            axes[row, cls].set_title(str(cls), fontsize=9)
        axes[row, 0].set_ylabel(name, fontsize=10)
    return report.save(fig, path, title="Learned weights of each class (linear classifiers)", dpi=100)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    losses = registry.lookup_many(dict.fromkeys(supervised.LOSSES), config.losses, "loss", "losses")
    run = setup.setup(config)
    centre = fit_mean_image(model_input(run.train.images))  # fitted on train, applied to every split
    num_steps = config.epochs * run.batches.steps_per_epoch
    model = LinearClassifier(run.num_classes, weight_std=config.weight_std)
    predict = functools.partial(supervised.predict, apply_fn=model.apply, preprocessing=centre.apply)
    rows, weights, runs = [], {}, {}
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    configs = {name: ml_collections.ConfigDict(config.to_dict() | {"loss": name}) for name in losses}
    settings_of = {name: supervised.SupervisedSettings.from_config(configs[name], run.num_classes)
                   for name in losses}
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    for index, name in enumerate(losses):
        config_of_run, settings = configs[name], settings_of[name]
        state = create_train_state(jax.random.fold_in(jax.random.PRNGKey(config.seed), index), model, tx,
                                   run.image_shape, init_from=config.init_from)
        runs[name] = pathlib.Path(workdir) / name
        state = loop.fit(config_of_run, runs[name], state=state, per_device_step=functools.partial(
            supervised.train_step, settings=settings, preprocessing=centre.apply), batches=run.batches,
            data_parallel=run.data_parallel, num_steps=num_steps)
        scores = {split: evaluate.classification_metrics(evaluate.map_over_batches(
            run.data_parallel, predict, state.variables, arrays.images, config.batch_size), arrays.labels)
            for split, arrays in (("train", run.train), ("test", run.test))}
        weights[name] = np.asarray(state.params["W"])
        rows.append([name, last_record(runs[name], "train")["loss"], scores["train"]["accuracy"],
                     scores["test"]["accuracy"]])
    table = report.Table(f"linear classifiers on {run.spec.name}: {num_steps} SGD steps each",
                         ["classifier", "final loss", "train accuracy", "test accuracy"], rows)
    plots = [plot_weights(weights, run.image_shape, pathlib.Path(workdir) / "weights.png"),
             report.plot_runs(runs, [("train", "loss")], pathlib.Path(workdir) / "loss.png",
                              title="training loss (data + λ·R(W))")]
    return report.finish(workdir, table, plots=plots,
                         summary={"train_examples": len(run.train.labels), "test_examples": len(run.test.labels)})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
