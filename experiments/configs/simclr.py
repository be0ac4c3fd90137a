"""SimCLR on the embedded digits: the main job, offline, a few minutes on 2 CPU cores.

    python -m experiments.simclr
    python -m experiments.simclr --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.simclr --config.parallel=pmap --config.dtype=bfloat16
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 16})
    config.head_layers = 2
    config.head_hidden_dim = 128
    config.projection_dim = 128
    config.temperature = 0.2
    config.batch_size = 256
    config.epochs = 60
    config.warmup_epochs = 5
    config.learning_rate = 1.0  # base: the peak is learning_rate × batch_size / 256
    config.weight_decay = 1e-6
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

    config.data = ml_collections.ConfigDict()
    config.data.name = "digits"
    config.data.folder = ""
    config.data.image_size = 32
    config.data.data_dir = ""

    config.log_every = 5
    config.checkpoint_every = 50
    config.keep_checkpoints = 2
    config.eval_every = 50
    return config
