"""SimCLR with NT-Xent sharded across devices: `python -m experiments.simclr`, the main job.

A ResNet encoder with synchronised BatchNorm and SimCLR's projection head, views made on the
device, NT-Xent over the global batch (each device computes its own rows), LARS with the linear
scaling rule, warmup and cosine decay, the kNN monitor every `eval_every` steps; the run ends with
the learned features against raw pixels and a random encoder (`results.json`, `curves.png`,
`embedding.png`; `--config.save_embeddings=True` adds `embeddings.npz`).
"""

from __future__ import annotations

import functools
import pathlib

import ml_collections

from experiments import self_supervised
from visionax import cli, parallel
from visionax.data.augment import ViewSettings
from visionax.ssl import simclr
from visionax.ssl.heads import ContrastiveModel
from visionax.train import setup
from visionax.train.precision import compute_dtype

NAME = "simclr"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The model (encoder and head with BatchNorm synchronised over the mesh), the step-0 state
    and the per-device step of `config`, for the batches of `run`."""
    settings = simclr.SimCLRSettings.from_config(config)
    view_settings = ViewSettings.from_config(config.augment, run.image_shape[:2])
    model = ContrastiveModel(
        encoder=self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS),
        head=simclr.projection_head(settings, bn_axis_name=parallel.DATA_AXIS, dtype=compute_dtype(config.dtype)),
    )
    state = self_supervised.create_state(config, run, model)
    return model, state, functools.partial(simclr.train_step, settings=settings, view_settings=view_settings)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    simclr.SimCLRSettings.from_config(config)  # a bad setting stops before the data is read
    run = setup.setup(config)
    model, state, step = create(config, run)
    return self_supervised.train(config, workdir, run, model, state, step, "SimCLR")


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
