"""The ViT against ResNet-18 on CIFAR-10 from an image folder <dir>/{train,test}/<class>/<image>, at
equal training time: the ViT (32×32 images cut into 8×8 patches: 16 tokens and the class token,
width 128, 6 blocks of 4 heads, MLP 256) trains 2 epochs, and ResNet-18 with the CIFAR stem
(width 64) trains for the seconds the ViT's steps took:

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.vit --config=experiments/configs/vit_cifar10.py \
        --config.data.folder="$d/cifar10-jpeg"

    ... --config.time_budget_seconds=600     # instead: each model as many steps as fit in 600 s
"""

import ml_collections

from experiments.configs import data_sources, training
from experiments.configs.vit import comparison, model_block


def get_config() -> ml_collections.ConfigDict:
    # 50,000 training images / 64 = 781 steps an epoch
    config = comparison(training.base(batch_size=64, epochs=2, log_every=78, checkpoint_every=100_000,
                                      eval_every=0, keep_checkpoints=1))  # only the final checkpoint
    config.data = data_sources.image_folder(image_size=32)
    config.dtype = "float32"
    config.evaluations = 4  # a ResNet-18 pass over the 10,000 test images takes about a minute on 2 cores
    training.supervised(config)  # no augmentation: in 2 epochs crops and flips slow the ViT down
    config.vit = model_block("vit_tiny_16", {"patch_size": 8, "width": 128, "depth": 6, "num_heads": 4,
                                             "mlp_dim": 256}, conv_impl="xla")
    # tuned for 2 epochs (MEASUREMENTS.md): batch 128 gave 44.3% at this learning rate, 45.1% at 0.002
    training.optimizer(config.vit, "adam", 0.001, schedule="warmup_cosine", weight_decay=1e-4, warmup_epochs=1)
    config.resnet = model_block("resnet18", {"cifar_stem": True}, conv_impl="auto")
    training.optimizer(config.resnet, "momentum", 0.05, schedule="cosine", weight_decay=5e-4)
    return config
