"""SimCLR's CIFAR-10 recipe (Chen et al. 2020, appendix B.9) on an image folder laid out as
<dir>/{train,test}/<class>/<image>: ResNet-18 with the CIFAR stem, batch 512, τ = 0.5, colour
jitter strength 0.5, no blur, LARS at 1.0 × batch/256 with 10 warmup epochs and cosine decay,
1000 epochs:

    python -m experiments.simclr --config=experiments/configs/simclr_cifar10.py \
        --config.data.folder=<dir>/cifar10-jpeg

Variant `cpu30`, the 30-minute run on 2 CPU cores recorded in MEASUREMENTS.md (kNN 55.8%, linear
probe 58.9%, 28 min 38 s whole command; raw pixels 44.2% / 37.8%): ResNet-18 width 32 with the ImageNet
stem, batch 256, 23 epochs, 1 warmup epoch, τ = 0.1 and LARS at 2.0 × batch/256 (each chosen by
5-epoch runs: a low temperature and a high rate learn faster in the first epochs):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.simclr --config=experiments/configs/simclr_cifar10.py:cpu30 \
        --config.data.folder="$d/cifar10-jpeg"
"""

import ml_collections

from experiments.configs import simclr, ssl_base


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ssl_base.use_cifar10(simclr.get_config())
    config.head_layers = 2
    config.projection_dim = 128
    config.temperature = 0.5
    config.epochs = 1000
    config.warmup_epochs = 10
    config.learning_rate = 1.0
    config.weight_decay = 1e-6
    config.augment.min_area = 0.08
    if variant == "cpu30":
        ssl_base.cpu30(config, epochs=23)
        config.warmup_epochs = 1
        config.temperature = 0.1
        config.learning_rate = 2.0
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of simclr_cifar10.py; use :cpu30 or none")
    return config
