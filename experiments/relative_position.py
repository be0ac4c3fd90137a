"""Relative patch position (Doersch et al. 2015), a pretext task: `python -m experiments.relative_position`.

From every image a centre patch and one of its 8 neighbours on a 3×3 grid (a gap and a random jitter
between the patches, per-patch colour dropping on RGB images, made on the device), a siamese encoder
with synchronised BatchNorm embeds both, and a small head on the concatenated features is trained to
tell which neighbour it is (8-way softmax cross-entropy; the loss and the position accuracy are
logged), the kNN monitor every `eval_every` steps; the run ends like SimCLR's: the encoder's features
of whole images against raw pixels and a random encoder (`results.json`, `curves.png`,
`embedding.png`; `--config.save_embeddings=True` adds `embeddings.npz`).
"""

from __future__ import annotations

import functools
import pathlib

import ml_collections

from experiments import self_supervised
from visionax import cli, parallel
from visionax.ssl.pretext import relative_position
from visionax.train import setup
from visionax.train.precision import compute_dtype

NAME = "relative_position"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The siamese model (encoder and 8-way head with BatchNorm synchronised over the mesh), the
    step-0 state and the per-device step of `config`, for the batches of `run`."""
    settings = relative_position.RelativePositionSettings.from_config(config)
    settings.check_fits(run.image_shape)
    model = relative_position.RelativePositionModel(
        encoder=self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS),
        head=relative_position.position_head(settings, bn_axis_name=parallel.DATA_AXIS,
                                             dtype=compute_dtype(config.dtype)),
    )
    pair_shape = (2, settings.patch_size, settings.patch_size, run.image_shape[2])  # one pair initialises
    state = self_supervised.create_state(config, run, model, pair_shape)
    return model, state, functools.partial(relative_position.train_step, settings=settings)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    relative_position.RelativePositionSettings.from_config(config)  # a bad setting stops before the data is read
    run = setup.setup(config)
    model, state, step = create(config, run)
    return self_supervised.train(config, workdir, run, model, state, step, "Relative patch position")


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
