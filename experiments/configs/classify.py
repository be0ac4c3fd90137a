"""Supervised classification: a small CNN on the embedded digits.

    python -m experiments.classify                            # 98.6% test accuracy (MEASUREMENTS.md)
    python -m experiments.classify --config.epochs=1          # CI smoke run
    python -m experiments.classify --config.validation_fraction=0.1 --config.early_stopping.patience=3
    python -m experiments.classify --config.init_from=<workdir> --config.finetune=linear   # transfer learning
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
    # Transfer learning from config.init_from (visionax.train.transfer): "linear" (a fixed feature
    # extractor and a new linear classifier), "top" (the last finetune_stages stages and the head), "all"
    # (every layer), or "" (ordinary training). The pretrained layers that train take
    # backbone_lr_multiplier × learning_rate.
    config.finetune = ""
    config.finetune_stages = 1
    config.backbone_lr_multiplier = 1.0
    # Early stopping on the validation split (needs validation_fraction > 0), evaluated every eval_every
    # steps: stop after `patience` evaluations without an improvement > min_delta (0: off), end with the
    # parameters of the best one (visionax.train.early_stopping). metric: validation_accuracy or validation_loss.
    config.early_stopping = ml_collections.ConfigDict(
        {"metric": "validation_accuracy", "mode": "max", "patience": 0, "min_delta": 0.0})
    return config
