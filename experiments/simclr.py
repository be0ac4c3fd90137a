"""SimCLR with NT-Xent sharded across devices: `python -m experiments.simclr`."""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections

from experiments import contrastive
from visionax import cli, parallel, schedules
from visionax.errors import UserError
from visionax.ssl import simclr
from visionax.ssl.heads import ContrastiveModel
from visionax.train import loop, optimizer


def create_optimizer(config: ml_collections.ConfigDict, num_steps: int, warmup_steps: int):
    """LARS (BatchNorm and biases excluded) at base × batch/256, linear warmup then cosine decay."""
    optimizer.check_learning_rate(config.learning_rate)
    peak = schedules.linear_scaling_rule(config.learning_rate, config.batch_size)
    schedule = schedules.warmup_cosine(peak, warmup_steps, num_steps)
    return optimizer.create_optimizer("lars", schedule, weight_decay=config.weight_decay)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    if not config.temperature > 0:
        raise UserError(f"temperature={config.temperature} must be positive; pass e.g. --config.temperature=0.5")
    setup = contrastive.setup(config)
    num_steps = config.epochs * setup.batches.steps_per_epoch
    warmup_steps = min(config.warmup_epochs * setup.batches.steps_per_epoch, num_steps - 1)
    model = ContrastiveModel(
        encoder=contrastive.encoder(config, bn_axis_name=parallel.DATA_AXIS),
        head=contrastive.projection_head(config, bn_axis_name=parallel.DATA_AXIS),
    )
    state = simclr.create_train_state(
        jax.random.PRNGKey(config.seed), model, create_optimizer(config, num_steps, warmup_steps),
        setup.image_shape,
    )
    random_variables = state.variables
    step = functools.partial(simclr.train_step, temperature=config.temperature,
                             view_settings=contrastive.view_settings(config, setup.image_shape))
    state = loop.fit(
        config, workdir, state=state, per_device_step=step, batches=setup.batches,
        parallel=setup.data_parallel, num_steps=num_steps,
        evaluate=contrastive.knn_monitor(setup, model, config.batch_size),
    )
    return contrastive.finish(config, workdir, setup, model, state, random_variables, "SimCLR")


if __name__ == "__main__":
    cli.run(train_and_evaluate, pathlib.Path(__file__).parent / "configs" / "simclr.py", name="simclr")
