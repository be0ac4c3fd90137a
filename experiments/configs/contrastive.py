"""What the SimCLR and MoCo configs share: encoder, batch, devices, views, data and loop settings
(on the embedded digits). Not an experiment config itself."""

import ml_collections

from experiments.configs import data


def get_base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 16})
    config.batch_size = 256
    config.epochs = 60
    config.parallel = "shard_map"
    config.dtype = "float32"
    config.conv_impl = "auto"

    config.augment = ml_collections.ConfigDict()
    config.augment.min_area = 0.25
    config.augment.flip_probability = 0.0  # flipped digits are other shapes
    config.augment.jitter_strength = 0.5
    config.augment.jitter_probability = 0.8
    config.augment.grayscale_probability = 0.0
    config.augment.blur_probability = 0.0

    config.data = data.digits()

    config.log_every = 5
    config.checkpoint_every = 50
    config.keep_checkpoints = 2
    config.eval_every = 50
    return config


def use_cifar10(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` switched to CIFAR-10 from an image folder (`--config.data.folder=<dir>`): ResNet-18
    with the CIFAR stem, batch 512, SimCLR's colour augmentation at strength 0.5 with flips and
    grayscale, no blur (a 3-tap blur at 32×32 pixels is mostly noise), long-run logging."""
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "stem_stride": 1, "width": 64})
    config.head_hidden_dim = 512
    config.batch_size = 512

    config.augment.flip_probability = 0.5
    config.augment.jitter_strength = 0.5
    config.augment.jitter_probability = 0.8
    config.augment.grayscale_probability = 0.2
    config.augment.blur_probability = 0.0

    config.data.name = "image_folder"
    config.data.folder = ""
    config.data.image_size = 32

    config.log_every = 20
    config.checkpoint_every = 500
    config.eval_every = 0
    return config
