"""Split-brain autoencoder on the embedded digits, tinted in L*a*b* (a random hue per example and
step), with two halves of SimCLR's digits encoder (ResNet-18 CIFAR stem, width 8 each: 64 + 64
features, each with a per-pixel decoder from its 1×1 map). About 1.5 minutes on 2 CPU cores:
kNN 90.3% / probe 95.0% against the random networks' 62.1% / 89.4% and raw pixels' 95.0% / 96.1%.

    python -m experiments.split_brain           # kNN and probe vs raw pixels and the random networks
    python -m experiments.split_brain --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.split_brain --config.lightness_bins=20 --config.ab_grid_size=20

Variant `cifar10`: CIFAR-10 from an image folder (`ssl_base.use_cifar10`: ResNet-18 width 64 with the
CIFAR stem, so two halves of width 32, batch 512; the images as they are); the 8×8 grid of predictions
makes one per 4×4 block there, Zhang et al.'s quarter resolution:

    python -m experiments.split_brain --config=experiments/configs/split_brain.py:cifar10 \\
        --config.data.folder=<dir>/cifar10-jpeg
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    config.epochs = 30
    config.lightness_bins = 100  # L* into bins of 1 over [0, 100] (Zhang et al.)
    config.ab_grid_size = 10.0  # (a*, b*) into cells of 10 over [-110, 110)²: 484 classes (Zhang et al.)
    config.ab_range = 110.0
    config.head_hidden_dim = 32  # channels per pixel in the decoders, before the 1×1 classifier
    config.prediction_size = 8  # an 8×8 grid: every digit pixel, every 4×4 block of CIFAR-10 (Zhang et al.)
    training.optimizer(config, "adam", 1e-2, schedule="warmup_cosine", weight_decay=0.0, warmup_epochs=1)
    if variant == "cifar10":
        ssl_base.use_cifar10(config)
        config.epochs = 100
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of split_brain.py; use :cifar10 or none")
    del config.augment  # the images as they are: the targets are their colours, and no shortcut needs a view
    return config
