"""Rotation prediction on the embedded digits, with SimCLR's digits encoder (ResNet-18 CIFAR stem,
width 16): about a minute on 2 CPU cores.

    python -m experiments.rotation           # kNN and probe vs raw pixels and a random encoder
    python -m experiments.rotation --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.rotation --config.head_layers=2   # an MLP head instead of the linear one

Variant `cifar10`: CIFAR-10 from an image folder (`ssl_base.use_cifar10`: ResNet-18 width 64 with the
CIFAR stem, batch 512, SimCLR's colour augmentation at strength 0.5 before the rotations):
    python -m experiments.rotation --config=experiments/configs/rotation.py:cifar10 --config.data.folder=<dir>/cifar10-jpeg
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    config.epochs = 30  # batch 256 is 1,024 rotated images per step
    config.head_layers = 1  # the linear 4-way classifier on the encoder's features; 2: an MLP head
    config.head_hidden_dim = 128  # used when head_layers > 1
    # One view per image before the rotations: without it the 8×8 digits' rotations are told apart
    # from where the digit sits in its frame (100% rotation accuracy, features below a random
    # encoder's); crops of at least half the image keep which way is up recognisable.
    config.augment.min_area = 0.5
    # Gidaris et al.: SGD with Nesterov momentum 0.9 at 0.1 (here × batch/256), weight decay 5e-4;
    # cosine decay instead of their steps
    training.optimizer(config, "nesterov", 0.1, schedule="cosine", weight_decay=5e-4, scale_learning_rate=True)
    if variant == "cifar10":
        ssl_base.use_cifar10(config)  # ResNet-18 (CIFAR stem), batch 512 (2,048 rotated images a step), the folder
        config.epochs = 100
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of rotation.py; use :cifar10 or none")
    return config
