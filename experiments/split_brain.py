"""Split-brain autoencoder (Zhang et al. 2017), a pretext task: `python -m experiments.split_brain`.

Every image in CIE L*a*b*; F1, the config's encoder at half its channels with a per-pixel decoder,
classifies the a*b* of every pixel from L*; F2, a second such network, classifies the L* of every
pixel from a*b* (per-pixel softmax cross-entropy over quantised bins; both losses and per-pixel
accuracies are logged), BatchNorm synchronised over the devices, the kNN monitor every `eval_every`
steps. Grey images (the embedded digits) are tinted in L*a*b* with a random hue per example and
step, since their a*b* is zero (`visionax.ssl.pretext.split_brain`). The run ends like SimCLR's: the
representation [F1's features, F2's features] against raw pixels and the two random networks
(`results.json`, `curves.png`, `embedding.png`; `--config.save_embeddings=True` adds `embeddings.npz`).
"""

from __future__ import annotations

import functools
import pathlib

import ml_collections

from experiments import self_supervised
from visionax import cli, parallel
from visionax.ssl.pretext import split_brain
from visionax.train import setup
from visionax.train.precision import compute_dtype

NAME = "split_brain"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The two networks (the config's encoder at half width, BatchNorm synchronised over the mesh,
    each with a per-pixel decoder), the step-0 state and the per-device step of `config`, for the
    batches of `run`."""
    settings = split_brain.SplitBrainSettings.from_config(config)
    split_brain.check_channels(run.image_shape)
    encoder = self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS,
                                      **split_brain.half_width(config.model, config.model_options))
    model = split_brain.split_brain_model(encoder, settings, run.image_shape, dtype=compute_dtype(config.dtype))
    state = self_supervised.create_state(config, run, model, (*run.image_shape[:2], 3))
    return model, state, functools.partial(split_brain.train_step, settings=settings)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    split_brain.SplitBrainSettings.from_config(config)  # a bad setting stops before the data is read
    split_brain.half_width(config.model, config.model_options)
    run = setup.setup(config)
    model, state, step = create(config, run)
    return self_supervised.train(config, workdir, run, model, state, step, "Split-brain autoencoder",
                                 embed_function=split_brain.embed)


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
