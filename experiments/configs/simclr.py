"""SimCLR on the embedded digits: the main job, offline, a few minutes on 2 CPU cores.

    python -m experiments.simclr
    python -m experiments.simclr --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.simclr --config.parallel=pmap --config.dtype=bfloat16
"""

import ml_collections

from experiments.configs import contrastive


def get_config() -> ml_collections.ConfigDict:
    config = contrastive.get_base_config()
    config.head_layers = 2
    config.head_hidden_dim = 128
    config.projection_dim = 128
    config.temperature = 0.2
    config.warmup_epochs = 5
    config.learning_rate = 1.0  # base: the peak is learning_rate × batch_size / 256
    config.weight_decay = 1e-6
    return config
