"""The VAE on CIFAR-10 from an image folder <dir>/{train,test}/<class>/<image> (32×32×3, 256 levels per
sub-pixel: bits/dim beside PixelCNN's 3.14 and the uniform bound of 8): latent size 128, width 64
(32×32 → 4×4 in three halvings), the discretised logistic, batch 128, 100 epochs, the whole test
set with k = 100 importance samples (an accelerator's job):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.vae --config=experiments/configs/vae_cifar10.py \
        --config.data.folder="$d/cifar10-jpeg"

Variant `cpu30`, for a run of under 30 minutes on 2 CPU cores: width 16, latent size 64, batch 64,
4 epochs (781 steps each), the bounds on the first 1,000 test images, 1,000 samples scored by a
classifier trained for 2 epochs (or `--config.classifier_from=<classify workdir>`). Measured
(MEASUREMENTS.md): 8.3 minutes, 6.30 bits/dim importance-weighted, bound 6.33; it plateaus there.
Width 32 with latent 128 at Adam's 1e-3 blew up (the KL term to NaN within 60 steps):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.vae --config=experiments/configs/vae_cifar10.py:cpu30 \
        --config.data.folder="$d/cifar10-jpeg"
"""

import ml_collections

from experiments.configs import data_sources, vae


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = vae.get_config()
    config.data = data_sources.image_folder(image_size=32)
    config.levels = 256
    config.latent_sizes = "128"
    config.width = 64
    config.conv_impl = "auto"
    config.batch_size = 128
    config.epochs = 100  # 390 steps an epoch
    config.log_every, config.checkpoint_every, config.eval_every = 39, 3900, 0  # eval_every 0: at the end only
    config.eval_batch_size = 100
    config.num_samples = 10_000
    if variant == "cpu30":
        config.width = 16
        config.latent_sizes = "64"
        config.batch_size = 64
        config.epochs = 4  # 781 steps an epoch
        config.log_every, config.checkpoint_every = 50, 500
        config.eval_examples = 1000
        config.num_samples = 1000
        config.classifier_epochs = 2
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of vae_cifar10.py; use :cpu30 or none")
    return config
