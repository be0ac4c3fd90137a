"""Ensembles and averaging on CIFAR-10 from an image folder laid out as <dir>/{train,test}/<class>/<image>:
8 ResNet-18s (CIFAR stem) trained side by side with the usual recipe (momentum 0.9, weight decay 5e-4,
cosine, random crop and flip), 200 epochs — a GPU run:

    python -m experiments.ensemble --config=experiments/configs/ensemble_cifar10.py \
        --config.data.folder=<dir>/cifar10-jpeg

Variant `cpu30`, sized for 30 minutes on 2 CPU cores: 4 ResNet-18s at width 32 with the ImageNet
stem (8×8 maps in the first stage, as simclr_cifar10.py:cpu30), oneDNN convolutions (one call per
member under vmap), 4 epochs each; the lone model and the snapshot run make 6 trainings:

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.ensemble --config=experiments/configs/ensemble_cifar10.py:cpu30 \
        --config.data.folder="$d/cifar10-jpeg"
"""

import ml_collections

from experiments.configs import data_sources, ensemble, training


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ensemble.get_config()
    config.data = data_sources.image_folder(image_size=32)
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True})
    config.conv_impl = "auto"
    config.batch_size = 128  # 390 steps an epoch
    config.epochs = 200
    config.log_every, config.checkpoint_every = 100, 1950
    training.optimizer(config, "momentum", 0.1, schedule="cosine", weight_decay=5e-4)
    config.augment.crop_padding = 4
    config.augment.flip_probability = 0.5
    config.snapshot_cycles = 5
    if variant == "cpu30":
        config.model_options = ml_collections.ConfigDict({"cifar_stem": False, "width": 32})
        config.members = 4
        config.ensemble_sizes = "2,4"
        config.epochs = 4
        config.snapshot_cycles = 4
        config.log_every, config.checkpoint_every = 39, 390
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of ensemble_cifar10.py; use :cpu30 or none")
    return config
