"""What the SimCLR and MoCo configs share: encoder, batch, devices, views, data and loop settings
(on the embedded digits), and the switch to CIFAR-10 from an image folder. Not an experiment
config itself."""

import ml_collections

from experiments.configs import data_sources, training


def get_base_config() -> ml_collections.ConfigDict:
    config = training.base(batch_size=256, epochs=60, log_every=5, checkpoint_every=50, eval_every=50)
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 16})
    config.dtype = "float32"
    config.conv_impl = "auto"
    config.save_embeddings = False  # True: the encoder's train and test features in embeddings.npz

    config.augment = ml_collections.ConfigDict()
    config.augment.min_area = 0.25
    config.augment.flip_probability = 0.0  # flipped digits are other shapes
    config.augment.jitter_strength = 0.5
    config.augment.jitter_probability = 0.8
    config.augment.grayscale_probability = 0.0
    config.augment.blur_probability = 0.0
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

    config.data = data_sources.image_folder(image_size=32)

    config.log_every = 20
    config.checkpoint_every = 500
    config.eval_every = 0
    return config


def cpu30(config: ml_collections.ConfigDict, epochs: int) -> ml_collections.ConfigDict:
    """The 30-minute CPU quality run of MEASUREMENTS.md: ResNet-18 at width 32 with the ImageNet stem
    (8×8 maps in its first stage on 32×32 images: the encoder whose step is fast enough on 2 cores),
    batch 256, `epochs` epochs."""
    config.model_options = ml_collections.ConfigDict({"cifar_stem": False, "width": 32})
    config.batch_size = 256
    config.epochs = epochs
    return config
