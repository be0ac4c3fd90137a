"""Rotation prediction (Gidaris et al. 2018), a pretext task: `python -m experiments.rotation`.

One random view of every image (crop and colour jitter, made on the device as SimCLR's) in its four
rotations (0°, 90°, 180°, 270°), an encoder with synchronised BatchNorm and a linear 4-way head
trained to tell which rotation it sees (softmax cross-entropy; the loss and the rotation accuracy
are logged), the kNN monitor every `eval_every` steps; the run ends like SimCLR's: the learned
features against raw pixels and a random encoder (`results.json`, `curves.png`, `embedding.png`;
`--config.save_embeddings=True` adds `embeddings.npz`).
"""

from __future__ import annotations

import functools
import pathlib

import ml_collections

from experiments import self_supervised
from visionax import cli, parallel
from visionax.data.augment import ViewSettings
from visionax.ssl.heads import ContrastiveModel
from visionax.ssl.pretext import rotation
from visionax.train import setup
from visionax.train.precision import compute_dtype

NAME = "rotation"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The model (encoder and 4-way head with BatchNorm synchronised over the mesh), the step-0 state
    and the per-device step of `config`, for the batches of `run`."""
    settings = rotation.RotationSettings.from_config(config)
    rotation.check_square(run.image_shape)
    view_settings = ViewSettings.from_config(config.augment, run.image_shape[:2])
    model = ContrastiveModel(
        encoder=self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS),
        head=rotation.rotation_head(settings, bn_axis_name=parallel.DATA_AXIS, dtype=compute_dtype(config.dtype)),
    )
    state = self_supervised.create_state(config, run, model)
    return model, state, functools.partial(rotation.train_step, view_settings=view_settings)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    rotation.RotationSettings.from_config(config)  # a bad setting stops before the data is read
    run = setup.setup(config)
    model, state, step = create(config, run)
    return self_supervised.train(config, workdir, run, model, state, step, "Rotation prediction")


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
