"""MoCo v2 on CIFAR-10 (the usual CIFAR adaptation: ResNet-18 CIFAR stem, batch 512, K = 4096,
m = 0.99, τ = 0.2, SGD 0.06 × batch/256 with cosine decay, weight decay 5e-4), from an image folder:

    python -m experiments.moco --config=experiments/configs/moco_cifar10.py \
        --config.data.folder=<dir>/cifar10-jpeg
"""

import ml_collections

from experiments.configs import moco


def get_config() -> ml_collections.ConfigDict:
    config = moco.get_config()
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 64})
    config.head_hidden_dim = 512
    config.temperature = 0.2
    config.key_momentum = 0.99
    config.queue_size = 4096
    config.batch_size = 512
    config.epochs = 800
    config.learning_rate = 0.06
    config.weight_decay = 5e-4

    config.augment.min_area = 0.2
    config.augment.flip_probability = 0.5
    config.augment.jitter_strength = 0.5
    config.augment.jitter_probability = 0.8
    config.augment.grayscale_probability = 0.2
    config.augment.blur_probability = 0.0  # 3-tap blur at 32×32 pixels is mostly noise; v2 blurs at 224

    config.data.name = "image_folder"
    config.data.folder = ""
    config.data.image_size = 32

    config.log_every = 20
    config.checkpoint_every = 500
    config.eval_every = 0
    return config
