"""Lecture 7: the same two-layer network trained on digits with each hand-written optimizer.

Left: minibatch training of `visionax.models.two_layer.TwoLayerNet` on the flattened model input
centred by the training mean image, with SGD, momentum, Nesterov, AdaGrad, RMSProp, Adam and LARS
(`visionax.optim`), each under the same schedule shape with its own peak, the same initialisation
and the same batches, through the shared supervised step and training loop (each in
`<workdir>/<optimizer>`); the Polyak average of the parameters is evaluated beside the last
iterate. Right: the full-batch problem that second-order methods suit, a softmax classifier fitted
by L-BFGS (`optax.lbfgs`) and by Newton's method (`jax.hessian`). Writes `loss_curves.png` and
`results.json` and prints the table.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax import cli, evaluate, optim, registry, report
from visionax.data.preprocess import fit_mean_image, model_input
from visionax.errors import UserError
from visionax.losses.classification import softmax_cross_entropy
from visionax.models.two_layer import TwoLayerNet
from visionax.train import checkpoint, loop, optimizer, setup, supervised
from visionax.train.metrics import read_metrics
from visionax.train.state import AveragedTrainState, create_train_state

NAME = "optimizers"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def fit_full_batch(config, x_train, y_train, num_classes):
    """A softmax classifier on the whole training set by L-BFGS and by Newton's method:
    {method: (params, loss before each iteration, final loss)} and the loss function."""
    l2 = float(config.l2)

    def loss_fn(params):
        logits = x_train @ params["W"] + params["b"]
        penalty = jnp.sum(params["W"] ** 2) + jnp.sum(params["b"] ** 2)
        return softmax_cross_entropy(logits, y_train) + 0.5 * l2 * penalty

    zeros = {"W": jnp.zeros((x_train.shape[1], num_classes)), "b": jnp.zeros(num_classes)}
    lbfgs = jax.jit(lambda p: optim.lbfgs_minimize(loss_fn, p, max_steps=config.lbfgs_steps, tol=1e-6))(zeros)
    newton_params, newton_losses = jax.jit(lambda p: optim.newton(loss_fn, p, num_steps=config.newton_steps))(zeros)
    return {
        "lbfgs": (lbfgs.params, np.asarray(lbfgs.losses[: int(lbfgs.num_steps)]), float(loss_fn(lbfgs.params))),
        "newton": (newton_params, np.asarray(newton_losses), float(loss_fn(newton_params))),
    }


def plot(runs: dict[str, pathlib.Path], steps_per_epoch: int, full_batch: dict, path: pathlib.Path) -> pathlib.Path:
    """Left: training loss of each optimizer (mean over each epoch); right: full-batch L-BFGS and Newton."""
    fig, axes = report.figure(1, 2, panel_size=(5.5, 4.2))
    left, right = axes[0]
    for index, (name, workdir) in enumerate(runs.items()):
        records = [record for record in read_metrics(workdir) if record["split"] == "train"]
        epochs = [record["step"] / steps_per_epoch for record in records]
        left.semilogy(epochs, [record["loss"] for record in records], ("-", "--", ":", "-.")[index % 4],
                      label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (mean over the logged steps)")
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
    return report.save(fig, path, title="Optimizers on digits", dpi=100)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    names = registry.lookup_many(optim.OPTIMIZERS, config.optimizers, "optimizer", "optimizers")
    for name in names:
        if name not in config.learning_rates:
            raise UserError(f"no learning rate for {name!r}; set --config.learning_rates.{name}=<value>")
    run = setup.setup(config)
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    averager = optim.polyak_average(settings.polyak_decay)
    centre = fit_mean_image(model_input(run.train.images))  # fitted on train, applied to every split
    steps_per_epoch = run.batches.steps_per_epoch
    num_steps = config.epochs * steps_per_epoch
    model = TwoLayerNet(hidden=config.hidden, num_classes=run.num_classes)
    predict = functools.partial(supervised.predict, apply_fn=model.apply, preprocessing=centre.apply)
    step = functools.partial(supervised.train_step, settings=settings, preprocessing=centre.apply)

    def accuracy_of(params, arrays):
        logits = evaluate.map_over_batches(run.data_parallel, predict, {"params": params}, arrays.images,
                                           config.batch_size)
        return evaluate.classification_metrics(logits, arrays.labels)

    optimizers = {name: optimizer.create_optimizer(
        config, total_steps=num_steps, steps_per_epoch=steps_per_epoch, optimizer=name,
        learning_rate=float(config.learning_rates[name])) for name in names}
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    rows, runs = [], {}
    for name, tx in optimizers.items():  # the same initialisation and the same batches for every optimizer
        learning_rate = float(config.learning_rates[name])
        state = create_train_state(jax.random.PRNGKey(config.seed), model, tx, run.image_shape,
                                   init_from=config.init_from, state_class=AveragedTrainState,
                                   fields=lambda variables, _: {"average": averager.init(variables["params"])})
        runs[name] = pathlib.Path(workdir) / name
        state = loop.fit(ml_collections.ConfigDict(config.to_dict() | {"optimizer": name}), runs[name],
                         state=state, per_device_step=step, batches=run.batches,
                         data_parallel=run.data_parallel, num_steps=num_steps)
        train = accuracy_of(state.params, run.train)
        rows.append([name, learning_rate, train["loss"], train["accuracy"], accuracy_of(state.params, run.test)["accuracy"],
                     accuracy_of(state.average.params, run.test)["accuracy"]])

    flat = lambda arrays: jnp.asarray(centre.apply(model_input(arrays.images)).reshape(len(arrays.labels), -1))
    x_train, x_test = flat(run.train), flat(run.test)
    full_batch = fit_full_batch(config, x_train, jnp.asarray(run.train.labels), run.num_classes)
    for method, (params, losses, final) in full_batch.items():
        scores = [float(evaluate.accuracy(x @ params["W"] + params["b"], labels))
                  for x, labels in ((x_train, run.train.labels), (x_test, run.test.labels))]
        rows.append([f"{method} (softmax, full batch, {len(losses)} iterations)", None, final, *scores, None])
    table = report.Table(
        f"optimizers on {run.spec.name}: {num_steps} minibatch steps each",
        ["optimizer", "learning rate", "final loss", "train accuracy", "test accuracy", "Polyak test accuracy"],
        rows)
    plots = [plot(runs, steps_per_epoch, full_batch, pathlib.Path(workdir) / "loss_curves.png")]
    return report.finish(workdir, table, plots=plots, summary={
        "train_examples": len(run.train.labels), "test_examples": len(run.test.labels),
        "epochs": config.epochs, "schedule": config.schedule})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
