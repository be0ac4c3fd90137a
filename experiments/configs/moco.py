"""MoCo v2 on the embedded digits (MLP head, τ = 0.2, cosine schedule; blur off at 8×8 pixels).

    python -m experiments.moco
    python -m experiments.moco --config=experiments/configs/moco_v1.py      # linear head, τ = 0.07
    python -m experiments.moco --config.epochs=2 --config.eval_every=0       # CI smoke run
"""

import ml_collections

from experiments.configs import contrastive


def get_config() -> ml_collections.ConfigDict:
    config = contrastive.get_base_config()
    config.version = "v2"
    config.head_hidden_dim = 128
    config.temperature = 0.2
    config.key_momentum = 0.99
    config.queue_size = 1024
    # BatchNorm statistics per group of 32 examples (the paper's per-GPU batch), so that shuffle BN
    # hides the positive key with any number of devices; 0: each device's whole batch.
    config.bn_group_size = 32
    config.learning_rate = 0.06  # base: the peak is learning_rate × batch_size / 256
    config.weight_decay = 5e-4
    config.eval_every = 100
    return config
