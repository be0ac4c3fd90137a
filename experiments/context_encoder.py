"""Context encoder inpainting (Pathak et al. 2016), a pretext task: `python -m experiments.context_encoder`.

Every image loses a region (a block of a quarter of its area at a random place, or the central one),
filled with the training set's mean; the encoder (the config's backbone, BatchNorm synchronised over the devices)
and a DCGAN-generator decoder from its pooled features paint the region back, trained on
L = L_recon + λ·L_adv: the squared error over the region and the non-saturating loss of a DCGAN
discriminator that is trained, alternately in the same step, to tell the completed images from the
real ones (`visionax.ssl.pretext.context_encoder`; the loss, the reconstruction loss, the
discriminator's loss, D(x) and D(x̂) are logged), the kNN monitor every `eval_every` steps. The run
ends like SimCLR's: the encoder's pooled features of whole images against raw pixels and a random
encoder (`results.json`, `curves.png`, `embedding.png`; `--config.save_embeddings=True` adds
`embeddings.npz`).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections

from experiments import self_supervised
from experiments.gan import check_widths
from visionax import cli, optim, parallel
from visionax.errors import UserError
from visionax.generative.gan import Discriminator
from visionax.ssl.heads import ContrastiveModel
from visionax.ssl.pretext import context_encoder
from visionax.train import optimizer, setup
from visionax.train.precision import compute_dtype

NAME = "context_encoder"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
DISCRIMINATOR_BETA1 = 0.5  # DCGAN's (and Pathak et al.'s) Adam β₁
DISCRIMINATOR_STREAM = 1  # the discriminator is initialised from fold_in(PRNGKey(seed), 1)


def check_config(config: ml_collections.ConfigDict) -> context_encoder.ContextEncoderSettings:
    """The task's settings; a UserError for any bad value that needs no data."""
    settings = context_encoder.ContextEncoderSettings.from_config(config)
    optimizer.check_learning_rate(config.discriminator_learning_rate, "discriminator_learning_rate")
    for key in ("decoder_widths", "discriminator_widths"):
        check_widths(config, key)
    return settings


def check_image_shape(config: ml_collections.ConfigDict, image_shape: tuple[int, int, int]) -> None:
    """A UserError unless both networks fit the images `[h, w, c]`: sides a multiple of 2^len(widths)."""
    height, width, _ = image_shape
    context_encoder.mask_size(image_shape)
    for key in ("decoder_widths", "discriminator_widths"):
        scale = 2 ** len(check_widths(config, key))
        if height % scale or width % scale:
            raise UserError(f"{key} has {len(config[key])} widths, one ×2 (or ÷2) each: the {height}×{width} images "
                            f"need sides that are multiples of {scale}; pass fewer widths")


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The model (the encoder and the decoder as its head, BatchNorm synchronised over the mesh), the
    step-0 state (with the discriminator and its Adam) and the per-device step of `config`, for the
    batches of `run`."""
    settings = check_config(config)
    check_image_shape(config, run.image_shape)
    dtype = compute_dtype(config.dtype)
    model = ContrastiveModel(
        encoder=self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS),
        head=context_encoder.Decoder(run.image_shape, check_widths(config, "decoder_widths"), dtype,
                                     bn_axis_name=parallel.DATA_AXIS),
    )
    discriminator = Discriminator(check_widths(config, "discriminator_widths"), dtype, config.conv_impl)
    state = context_encoder.add_discriminator(
        self_supervised.create_state(config, run, model), discriminator,
        optim.adam(config.discriminator_learning_rate, b1=DISCRIMINATOR_BETA1),
        jax.random.fold_in(jax.random.PRNGKey(config.seed), DISCRIMINATOR_STREAM), run.image_shape)
    fill = context_encoder.fill_values(settings.fill, run.train.images)
    return model, state, functools.partial(context_encoder.train_step, settings=settings, fill=fill)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    check_config(config)  # a bad setting stops before the data is read
    run = setup.setup(config)
    model, state, step = create(config, run)
    return self_supervised.train(config, workdir, run, model, state, step, "Context encoder inpainting")


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
