"""Supervised classification: a small CNN on the embedded digits.

    python -m experiments.classify
    python -m experiments.classify --config.epochs=1          # CI smoke run
    python -m experiments.classify --config.model=resnet18 --config.model_options.cifar_stem=True \
        --config.data.name=image_folder --config.data.folder=<dir>   # e.g. CIFAR-10 JPEG folder
"""

import ml_collections

from experiments.configs import data


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict()
    config.optimizer = "adam"
    config.learning_rate = 0.003
    config.schedule = "cosine"
    config.warmup_steps = 0
    config.weight_decay = 0.0001
    config.batch_size = 128
    config.epochs = 15
    config.parallel = "shard_map"
    config.dtype = "float32"
    config.conv_impl = "xla"

    config.data = data.digits()

    config.log_every = 10
    config.checkpoint_every = 100
    config.keep_checkpoints = 3
    config.eval_every = 33
    return config
