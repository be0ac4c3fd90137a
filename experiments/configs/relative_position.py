"""Relative patch position on the embedded digits, with SimCLR's digits encoder (ResNet-18 CIFAR
stem, width 16). The 8×8 digits hold a 3×3 grid of 2×2 patches with a 1-pixel gap and no jitter
(3·2 + 2·1 + 3·0 = 8: the grid fills the image, the centre patch is always pixels 3..4; a jitter of
1 would need 11 pixels); the digits have one channel, so there is no colour to drop. About a minute
on 2 CPU cores. On the digits the task is learned (about 50% of the 8 positions against 12.5% by
chance) but a 2×2 patch holds a piece of stroke, not a part: the features of whole images end just
below a random encoder's (measured kNN 65.5%, probe 81.9% vs random 67.1% / 83.3%; without the gap 58.5% /
79.7%, the neighbour then told from the stroke running on).

    python -m experiments.relative_position          # kNN and probe vs raw pixels and a random encoder
    python -m experiments.relative_position --config.epochs=2 --config.eval_every=0    # CI smoke run
    python -m experiments.relative_position --config.head_layers=1   # a linear head on the pair

Variant `cifar10`: CIFAR-10 from an image folder (`ssl_base.use_cifar10`: ResNet-18 width 64 with
the CIFAR stem, batch 512) with the paper's proportions scaled to 32×32: 7×7 patches, a 3-pixel gap,
jitter 0..1 (3·7 + 2·3 + 3·1 = 30 pixels, the grid moves by up to 2), colour dropping on:

    python -m experiments.relative_position --config=experiments/configs/relative_position.py:cifar10 \
        --config.data.folder=<dir>/cifar10-jpeg
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    config.epochs = 30
    config.patch_size = 2
    config.gap = 1  # pixels at least between two patches: no edge continues from one to the other
    config.jitter = 0  # each patch moves by its own 0..jitter pixels down and right
    config.colour_dropping = True  # RGB only: keep one random channel per patch, the others mid-grey noise
    config.drop_noise = 0.01  # the noise's standard deviation (model input range [0, 1])
    config.head_layers = 2  # Doersch et al.: fully connected layers on the concatenated features
    config.head_hidden_dim = 128
    # SGD with Nesterov momentum 0.9 at 0.1 × batch/256, cosine decay, weight decay 5e-4 (rotation's)
    training.optimizer(config, "nesterov", 0.1, schedule="cosine", weight_decay=5e-4, scale_learning_rate=True)
    if variant == "cifar10":
        ssl_base.use_cifar10(config)
        config.epochs = 200
        config.patch_size, config.gap, config.jitter = 7, 3, 1
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of relative_position.py; use :cifar10 or none")
    return config
