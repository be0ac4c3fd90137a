"""MoCo (v1 or v2) with a cross-device queue and shuffle BN: `python -m experiments.moco`."""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections

from experiments import contrastive
from visionax import cli, models, schedules
from visionax.errors import UserError
from visionax.ssl import moco
from visionax.ssl.heads import ContrastiveModel
from visionax.train import loop, optimizer


def settings(config: ml_collections.ConfigDict) -> moco.MoCoSettings:
    """The `config.version` preset (head, schedule) with the config's temperature, momentum and queue.

    The views' augmentation comes from `config.augment` (see `contrastive.view_settings`)."""
    return moco.moco_preset(
        config.version, temperature=config.temperature, momentum=config.key_momentum,
        queue_size=config.queue_size,
    )


def create_optimizer(config: ml_collections.ConfigDict, num_steps: int, cosine: bool):
    """SGD with momentum 0.9 at base × batch/256: cosine decay (v2), or ×0.1 at 60% and 80% (v1)."""
    optimizer.check_learning_rate(config.learning_rate)
    peak = schedules.linear_scaling_rule(config.learning_rate, config.batch_size)
    if cosine:
        schedule = schedules.cosine(peak, num_steps)
    else:
        schedule = schedules.step_decay(peak, [int(0.6 * num_steps), int(0.8 * num_steps)])
    return optimizer.create_optimizer("momentum", schedule, weight_decay=config.weight_decay)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    setup = contrastive.setup(config)
    moco_settings = settings(config)
    moco.check_queue_size(moco_settings.queue_size, config.batch_size)
    num_steps = config.epochs * setup.batches.steps_per_epoch
    # Per-device BatchNorm: shuffle BN, not synchronised BN, keeps the key batch statistics honest;
    # split into groups of bn_group_size examples, it does so on one device too.
    splits = moco.bn_splits(config.bn_group_size, config.batch_size // setup.data_parallel.device_count)
    if splits > 1 and "bn_splits" not in models.model_options(config.model):
        raise UserError(f"model {config.model!r} has no split BatchNorm (bn_splits), which "
                        f"bn_group_size={config.bn_group_size} asks for; use a ResNet encoder or "
                        f"--config.bn_group_size=0 (statistics over each device's whole batch)")
    model = ContrastiveModel(
        encoder=contrastive.encoder(config, bn_axis_name=None, bn_splits=splits),
        head=moco.projection_head(moco_settings, config.head_hidden_dim),
    )
    state = moco.create_train_state(
        jax.random.PRNGKey(config.seed), model, create_optimizer(config, num_steps, moco_settings.cosine_schedule),
        setup.image_shape, moco_settings, config.batch_size,
    )
    random_variables = state.variables
    step = functools.partial(moco.train_step, settings=moco_settings,
                             view_settings=contrastive.view_settings(config, setup.image_shape))
    state = loop.fit(
        config, workdir, state=state, per_device_step=step, batches=setup.batches,
        parallel=setup.data_parallel, num_steps=num_steps,
        evaluate=contrastive.knn_monitor(setup, model, config.batch_size),
    )
    return contrastive.finish(config, workdir, setup, model, state, random_variables, f"MoCo {config.version}")


if __name__ == "__main__":
    cli.run(train_and_evaluate, pathlib.Path(__file__).parent / "configs" / "moco.py", name="moco")
