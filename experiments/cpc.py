"""Contrastive predictive coding on a grid of patches: `python -m experiments.cpc`.

Every image is cut into overlapping patches, a small encoder embeds each patch, a causal context
network summarises the rows above, and K linear predictors guess the embeddings of the patches 1…K
rows below, scored with InfoNCE against every patch of the global batch (each device computes its
own predictions' scores). The run ends with the learned encoder's features (patch embeddings
averaged over the grid) against raw pixels and a random encoder (weighted kNN and linear probe:
`results.json`, `curves.png`, `embedding.png`).
"""

from __future__ import annotations

import pathlib

import ml_collections

from experiments import self_supervised
from visionax import cli, parallel
from visionax.ssl import cpc
from visionax.train import setup

NAME = "cpc"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The CPC model around the patch encoder `config.model` (BatchNorm synchronised over the mesh),
    the step-0 state and the per-device step, for the batches of `run`."""
    settings = cpc.CPCSettings.from_config(config)
    model = cpc.cpc_model(settings, self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS))
    state = self_supervised.create_state(config, run, model)
    return model, state, cpc.train_step


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    settings = cpc.CPCSettings.from_config(config)  # a bad setting stops before the data is read
    run = setup.setup(config)
    settings.check_image_size(*run.image_shape[:2])
    model, state, step = create(config, run)
    return self_supervised.train(config, workdir, run, model, state, step, "CPC", embed_function=cpc.embed)


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
