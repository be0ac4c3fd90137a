"""A small ViT against ResNet-18 at equal training time, on the embedded 8×8 digits (CPU).

    python -m experiments.vit                                      # the ViT 15 epochs, the ResNet as long
    python -m experiments.vit --config.time_budget_seconds=60      # each model 60 s of training steps
    python -m experiments.vit --config.vit.model_options.patch_size=2   # 16 tokens of 2×2 pixels
    python -m experiments.vit --config=experiments/configs/vit_cifar10.py --config.data.folder=<dir>

The ViT cuts each 8×8 digit into 4×4 patches (4 tokens and the class token) of width 64, 4
blocks of 4 heads, MLP 128, trained by Adam with warmup and cosine decay and weight decay on its
kernels (alone, 15 epochs: 96.4% test accuracy with 4×4 patches, 88.0% with 2×2, which fit the
training set as well but generalise worse); ResNet-18 has the CIFAR stem (3×3, stride 1, no max-pool: an 8×8 map in its first stage)
at width 16, trained by momentum SGD, each convolution by the fastest implementation on this
machine (conv_impl="auto"). Both read the same batches with the same loss and augmentation.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs import training


def model_block(model: str, options: dict, *, conv_impl: str) -> ml_collections.ConfigDict:
    """The keys of one model of the comparison: its name in `visionax.models.get_model`, its options,
    its convolution implementation (`visionax.layers.conv`); its optimizer is added by the caller."""
    return ml_collections.ConfigDict(
        {"model": model, "model_options": ml_collections.ConfigDict(options), "conv_impl": conv_impl})


def comparison(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` (from `training.base`) with the keys of the equal-time rule, which replace its
    `eval_every` (the two models take different numbers of steps)."""
    del config["eval_every"]
    # None: the ViT trains `epochs` epochs and its measured training seconds are the budget of the
    # ResNet; a number of seconds: each model takes as many steps as fit in it (`epochs` unused).
    config.time_budget_seconds = config_dict.placeholder(float)
    config.calibration_steps = 10  # timed steps (after one warm-up) that measure each model's step time
    config.evaluations = 6  # test evaluations along each model's training (the points of its curves)
    return config


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 128 = 11 steps an epoch: one train record an epoch
    config = comparison(training.base(batch_size=128, epochs=15, log_every=11, checkpoint_every=100_000, eval_every=0,
                                      keep_checkpoints=1))  # only the final checkpoint: never resumed
    config.dtype = "float32"
    training.supervised(config)  # softmax, no augmentation (flipped digits are other shapes)
    config.vit = model_block("vit_tiny_16", {"patch_size": 4, "width": 64, "depth": 4, "num_heads": 4,
                                             "mlp_dim": 128}, conv_impl="xla")
    training.optimizer(config.vit, "adam", 0.003, schedule="warmup_cosine", weight_decay=1e-4, warmup_epochs=1)
    config.resnet = model_block("resnet18", {"cifar_stem": True, "width": 16}, conv_impl="auto")
    training.optimizer(config.resnet, "momentum", 0.05, schedule="cosine", weight_decay=5e-4)
    return config
