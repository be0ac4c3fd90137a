"""MoCo v2 on the embedded digits (MLP head, τ = 0.2, cosine schedule; blur off at 8×8 pixels).

    python -m experiments.moco               # kNN and probe of MEASUREMENTS.md's MoCo row
    python -m experiments.moco --config=experiments/configs/moco_v1.py      # linear head, τ = 0.07
    python -m experiments.moco --config.epochs=2 --config.eval_every=0       # CI smoke run
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config() -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    config.head_layers = 2  # v2's MLP head; 1: v1's linear head
    config.head_hidden_dim = 128
    config.projection_dim = 128
    config.temperature = 0.2
    config.key_momentum = 0.99
    config.queue_size = 1024
    # BatchNorm statistics per group of 32 examples (the paper's per-GPU batch), so that shuffle BN
    # hides the positive key with any number of devices; 0: each device's whole batch.
    config.bn_group_size = 32
    # SGD with momentum 0.9 at 0.06 × batch/256, cosine decay (v1: ×0.1 at 60% and 80%)
    training.optimizer(config, "momentum", 0.06, schedule="cosine", weight_decay=5e-4,
                       scale_learning_rate=True)
    config.eval_every = 100
    return config
