"""CPC on the embedded digits: 4×4 patches every 2 pixels (a 3×3 grid of 8×8 digits), predictions
1 and 2 rows ahead, offline on 2 CPU cores.

    python -m experiments.cpc
    python -m experiments.cpc --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.cpc --config.context=gru --config.parallel=pmap
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config() -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    del config.augment  # CPC here trains on the images themselves (no views)
    config.model = "small_cnn"  # the patch encoder: 4×4 patches → features
    config.model_options = ml_collections.ConfigDict({"widths": (16, 32, 64)})
    config.patch_size = 4
    config.stride = 2  # 50% overlap
    config.prediction_steps = 2  # K: rows predicted ahead (fewer than the 3 patch rows)
    config.context = "conv"  # conv: masked convolution over the rows above; gru: a GRU down each column
    config.context_features = 64
    config.context_layers = 2
    config.epochs = 30
    training.optimizer(config, "adam", 2e-3, schedule="warmup_cosine", weight_decay=0.0, warmup_epochs=2)
    return config
