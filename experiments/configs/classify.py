"""Supervised classification: a small CNN on the embedded digits.

    python -m experiments.classify                            # 98.6% test accuracy (MEASUREMENTS.md)
    python -m experiments.classify --config.epochs=1          # CI smoke run
    python -m experiments.classify --config.model=resnet18 --config.model_options.cifar_stem=True \
        --config.data.folder=<dir>                            # any image folder, e.g. CIFAR-10 JPEGs
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    config = training.base(batch_size=128, epochs=15, log_every=10, checkpoint_every=100, eval_every=33,
                           keep_checkpoints=3)
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict()
    config.dtype = "float32"
    config.conv_impl = "xla"
    training.optimizer(config, "adam", 0.003, schedule="cosine", weight_decay=1e-4)
    training.supervised(config)
    return config
