"""SimCLR on the embedded digits: the main job, offline, about a minute on 2 CPU cores.

    python -m experiments.simclr             # kNN and probe of MEASUREMENTS.md's main-job row
    python -m experiments.simclr --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.simclr --config.parallel=pmap --config.dtype=bfloat16
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config() -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    config.head_layers = 2
    config.head_hidden_dim = 128
    config.projection_dim = 128
    config.temperature = 0.2
    # LARS at 1.0 × batch/256, warmup then cosine (BatchNorm and biases excluded from decay)
    training.optimizer(config, "lars", 1.0, schedule="warmup_cosine", weight_decay=1e-6,
                       scale_learning_rate=True, warmup_epochs=5)
    return config
