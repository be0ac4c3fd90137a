"""MoCo with a momentum key encoder, a cross-device queue and shuffle BN: `python -m experiments.moco`.

v2 by default (`configs/moco.py`: MLP head, τ 0.2, cosine schedule), v1 with
`--config=experiments/configs/moco_v1.py` (linear head, τ 0.07, step schedule): the two differ only
in their configs. BatchNorm is per device and split into groups of `bn_group_size` examples, so
that shuffle BN hides the positive key on any number of devices. The run ends like SimCLR's: the
learned features against raw pixels and a random encoder (`results.json`, plots).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections

from experiments import self_supervised
from visionax import cli, models
from visionax.data.augment import ViewSettings
from visionax.errors import UserError
from visionax.ssl import moco
from visionax.ssl.heads import ContrastiveModel
from visionax.train import optimizer, setup

NAME = "moco"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The model (per-device BatchNorm in groups of `bn_group_size` examples), the step-0 state and
    the per-device step of `config`, for the batches and devices of `run`."""
    settings = moco.MoCoSettings.from_config(config)
    moco.check_queue_size(settings.queue_size, config.batch_size)
    view_settings = ViewSettings.from_config(config.augment, run.image_shape[:2])
    # Per-device BatchNorm: shuffle BN, not synchronised BN, keeps the key batch statistics honest;
    # split into groups of bn_group_size examples, it does so on one device too.
    splits = settings.bn_splits(config.batch_size // run.data_parallel.device_count)
    if splits > 1 and "bn_splits" not in models.model_options(config.model):
        raise UserError(f"model {config.model!r} has no split BatchNorm (bn_splits), which "
                        f"bn_group_size={config.bn_group_size} asks for; use a ResNet encoder or "
                        f"--config.bn_group_size=0 (statistics over each device's whole batch)")
    model = ContrastiveModel(
        encoder=self_supervised.encoder(config, **({"bn_splits": splits} if splits > 1 else {})),
        head=moco.projection_head(settings),
    )
    num_steps = config.epochs * run.batches.steps_per_epoch
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    state = moco.create_moco_state(jax.random.PRNGKey(config.seed), model, tx, run.image_shape, settings,
                                   config.batch_size, init_from=config.init_from)
    return model, state, functools.partial(moco.train_step, settings=settings, view_settings=view_settings)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    settings = moco.MoCoSettings.from_config(config)  # a bad setting stops before the data is read
    moco.check_queue_size(settings.queue_size, config.batch_size)
    run = setup.setup(config)
    model, state, step = create(config, run)
    head = "linear head" if settings.head_layers == 1 else "MLP head"
    return self_supervised.train(config, workdir, run, model, state, step, f"MoCo ({head})")


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
