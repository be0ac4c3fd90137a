"""CPC on the embedded digits: 4×4 patches every 2 pixels (a 3×3 grid of 8×8 digits), predictions
1 and 2 rows ahead, offline on 2 CPU cores.

    python -m experiments.cpc
    python -m experiments.cpc --config.epochs=2 --config.eval_every=0     # CI smoke run
    python -m experiments.cpc --config.context=gru --config.parallel=pmap

Variant `cifar10`: CIFAR-10 from an image folder (`ssl_base.use_cifar10`: ResNet-18 width 64 with the
CIFAR stem as the patch encoder, batch 512), 16×16 patches every 8 pixels (the digits' 3×3 grid):
    python -m experiments.cpc --config=experiments/configs/cpc.py:cifar10 --config.data.folder=<dir>/cifar10-jpeg
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
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
    if variant == "cifar10":
        ssl_base.use_cifar10(config)  # ResNet-18 (CIFAR stem) as the patch encoder, batch 512, the folder
        del config.head_hidden_dim  # no projection head here
        config.patch_size, config.stride = 16, 8  # a 3×3 grid of 32×32 images, as of the 8×8 digits
        config.epochs = 100
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of cpc.py; use :cifar10 or none")
    del config.augment  # CPC here trains on the images themselves (no views)
    return config
