"""SimCLR's CIFAR-10 recipe (Chen et al. 2020, appendix B.9): ResNet-18 with the CIFAR stem, batch 512,
τ = 0.5, colour jitter strength 0.5, no blur, LARS at 1.0 × batch/256 with 10 warmup epochs and cosine
decay, 1000 epochs. Reads an image folder laid out as <dir>/{train,test}/<class>/<image>:

    python -m experiments.simclr --config=experiments/configs/simclr_cifar10.py \
        --config.data.folder=<dir>/cifar10-jpeg

The 30-minute CPU quality run of BUILD_NOTES.md shrinks it with overrides (width 32, ImageNet stem,
batch 256, 21 epochs, τ = 0.2, which learns faster than 0.5 in the first epochs).
"""

import ml_collections

from experiments.configs import contrastive, simclr


def get_config() -> ml_collections.ConfigDict:
    config = contrastive.use_cifar10(simclr.get_config())
    config.head_layers = 2
    config.projection_dim = 128
    config.temperature = 0.5
    config.epochs = 1000
    config.warmup_epochs = 10
    config.learning_rate = 1.0
    config.weight_decay = 1e-6
    config.augment.min_area = 0.08
    return config
