"""Supervised image classification with softmax cross-entropy: `python -m experiments.classify`."""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax import cli, data, models, parallel, report
from visionax.data.pipeline import Batches
from visionax.train import loop, optimizer, supervised
from visionax.train.metrics import read_metrics
from visionax.train.precision import compute_dtype
from visionax.train.state import TrainState


def create_train_state(config, model, image_shape, num_steps: int) -> TrainState:
    """Initialised parameters, BatchNorm statistics and optimizer state at step 0."""
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = jax.jit(functools.partial(model.init, train=False))(
        init_rng, jnp.zeros((1,) + image_shape, jnp.float32)
    )
    learning_rate = optimizer.schedule(
        config.schedule, config.learning_rate, total_steps=num_steps, warmup_steps=config.warmup_steps
    )
    tx = optimizer.create_optimizer(config.optimizer, learning_rate, weight_decay=config.weight_decay)
    return TrainState.create(apply_fn=model.apply, variables=variables, tx=tx, rng=state_rng)


def accuracy_and_loss(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    log_probabilities = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32))
    loss = -jnp.take_along_axis(log_probabilities, jnp.asarray(labels)[:, None], axis=1).mean()
    return {"accuracy": float(np.mean(np.argmax(logits, -1) == labels)), "loss": float(loss)}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    parallel.initialize_distributed()
    mesh_parallel = parallel.DataParallel(parallel.make_mesh(), config.parallel)
    parallel.check_batch_size(config.batch_size, mesh_parallel.device_count)
    spec = data.DatasetSpec.from_config(config.data)
    batches = Batches(data.data_source(spec, "train"), config.batch_size, config.seed)
    test_images, test_labels = data.as_arrays(data.data_source(spec, "test"))
    num_steps = config.epochs * batches.steps_per_epoch
    model = models.get_model(
        config.model, num_classes=data.num_classes(spec), dtype=compute_dtype(config.dtype),
        conv_impl=config.conv_impl, **config.model_options.to_dict(),
    )
    state = create_train_state(config, model, test_images.shape[1:], num_steps)
    predict = functools.partial(supervised.predict, apply_fn=model.apply)

    def evaluate(state: TrainState, step: int) -> dict[str, float]:
        logits = parallel.map_batches(mesh_parallel, predict, state.variables, test_images, config.batch_size)
        return accuracy_and_loss(logits, test_labels)

    state = loop.fit(
        config, workdir, state=state, per_device_step=supervised.train_step, batches=batches,
        parallel=mesh_parallel, num_steps=num_steps, evaluate=evaluate,
    )
    result = evaluate(state, int(state.step))
    if jax.process_index() == 0:
        last_train = [record for record in read_metrics(workdir) if record["split"] == "train"][-1]
        plot = report.plot_curves(workdir, [("train", "loss"), ("train", "accuracy"), ("eval", "accuracy")], "curves.png")
        print(report.table(
            ["split", "examples", "loss", "accuracy"],
            [["train (last steps)", config.log_every * config.batch_size, last_train["loss"], last_train["accuracy"]],
             ["test", len(test_labels), result["loss"], result["accuracy"]]],
            title=f"{config.model} on {spec.name}: {int(state.step)} steps, {mesh_parallel.device_count} device(s)",
        ))
        print(f"plots: {plot}")
    return {"test_accuracy": result["accuracy"], "test_loss": result["loss"], "steps": int(state.step)}


if __name__ == "__main__":
    cli.run(train_and_evaluate, pathlib.Path(__file__).parent / "configs" / "classify.py", name="classify")
