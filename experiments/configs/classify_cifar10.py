"""The supervised CIFAR-10 recipe with lecture 7's regularisers, on an image folder
<dir>/{train,test}/<class>/<image>: ResNet-18 with the CIFAR stem, SGD with momentum 0.9, batch 128,
learning rate 0.1 with a linear warmup of 1 epoch then a cosine decay over 200 epochs, weight decay
5e-4 on the kernels only (masked: no biases, no BatchNorm), random crops (4-pixel padding) and
horizontal flips; cutout, mixup, dropout and stochastic depth are one flag each (the hand-written
layers of `visionax.layers.regularize`):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.classify --config=experiments/configs/classify_cifar10.py \
        --config.data.folder="$d/cifar10-jpeg"
    ... --config.augment.cutout_size=16            # cutout (DeVries & Taylor 2017: 16×16 on CIFAR-10)
    ... --config.augment.mixup_alpha=1.0           # mixup (Zhang et al. 2018: α = 1 on CIFAR-10)
    ... --config.model_options.dropout=0.2         # dropout before the classifier
    ... --config.model_options.drop_path=0.1       # stochastic depth, linear in the block index

What the full-length recipe reaches on a GPU, from its sources (the original CIFAR-10, not this
JPEG copy): ResNet-18 with this recipe, 93–95% (kuangliu/pytorch-cifar, whose recipe this is:
200 epochs of SGD 0.1, momentum 0.9, weight decay 5e-4, cosine; its README lists ResNet18 93.02%,
and a re-run of it reports 95.43% in about 50 minutes on a V100S); cutout's paper 95.28% → 96.01%
for ResNet-18 without and with 16×16 cutout (its schedule: 200 epochs, steps at 60/120/160);
mixup's paper 94.4% → 95.8% for PreAct ResNet-18 (ERM against α = 1).

Variant `cpu` (the ablation of MEASUREMENTS.md): width 16 (a sixteenth of the convolution FLOPs),
oneDNN's convolutions, 4 epochs of batch 128 (1,560 steps), the warmup and the cosine over those;
every regulariser compared at the same number of steps:

    python -m experiments.classify --config=experiments/configs/classify_cifar10.py:cpu \
        --config.data.folder="$d/cifar10-jpeg" --config.augment.cutout_size=8
"""

import ml_collections

from experiments.configs import classify, data_sources, training


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = classify.get_config()  # the experiment's keys (transfer, early stopping) with their defaults
    config.data = data_sources.image_folder(image_size=32)
    config.batch_size = 128
    config.epochs = 200  # 390 steps an epoch
    config.log_every, config.checkpoint_every, config.eval_every = 39, 3900, 3900
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "dropout": 0.0, "drop_path": 0.0})
    config.conv_impl = "auto"
    training.optimizer(config, "momentum", 0.1, schedule="warmup_cosine", weight_decay=5e-4, warmup_epochs=1)
    config.augment.crop_padding = 4
    config.augment.flip_probability = 0.5
    if variant == "cpu":
        config.model_options.width = 16
        config.epochs = 4
        config.log_every, config.checkpoint_every, config.eval_every = 39, 390, 0
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of classify_cifar10.py; use :cpu or none")
    return config
