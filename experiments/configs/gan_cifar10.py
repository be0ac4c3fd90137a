"""DCGAN on CIFAR-10 from an image folder <dir>/{train,test}/<class>/<image> (32×32×3): the generator
from z (100 values) through a 4×4×256 map and three doublings, the discriminator through three
halvings, batch 128, 30 epochs (390 rounds each), 10,000 samples scored against the test set in the
features of a classifier trained on the folder (an accelerator's job):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.gan --config=experiments/configs/gan_cifar10.py \
        --config.data.folder="$d/cifar10-jpeg"

Variant `cpu30`, sized for a 30-minute run on 2 CPU cores: widths a quarter (the generator's 4×4×64
→ 8×8×32 → 16×16×16; about 60 ms a round at batch 64 on an idle machine), batch 64, 8 epochs
(781 rounds each) for each loss, 1,000 samples scored every epoch by a classifier trained for
2 epochs (or `--config.classifier_from=<classify workdir>`):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.gan --config=experiments/configs/gan_cifar10.py:cpu30 \
        --config.data.folder="$d/cifar10-jpeg"
"""

import ml_collections

from experiments.configs import data_sources, gan


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = gan.get_config()
    config.data = data_sources.image_folder(image_size=32)
    config.latent_dim = 100  # DCGAN's z
    config.generator_widths = (256, 128, 64)  # 4×4×256 → 8×8×128 → 16×16×64 → 32×32×3
    config.discriminator_widths = (64, 128, 256)  # 32×32 → 16×16 → 8×8 → 4×4, then one logit
    config.batch_size = 128
    config.epochs = 30  # 390 rounds an epoch
    config.log_every, config.checkpoint_every, config.eval_every = 39, 1950, 1950
    config.num_samples = 10_000
    if variant == "cpu30":
        config.generator_widths = (64, 32, 16)
        config.discriminator_widths = (16, 32, 64)
        config.batch_size = 64
        config.epochs = 8  # 781 rounds an epoch
        config.log_every, config.checkpoint_every, config.eval_every = 50, 781, 781
        config.num_samples = 1000
        config.classifier_epochs = 2
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of gan_cifar10.py; use :cpu30 or none")
    return config
