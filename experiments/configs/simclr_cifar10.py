"""SimCLR's CIFAR-10 recipe (Chen et al. 2020, appendix B.9): ResNet-18 with the CIFAR stem, batch 512,
τ = 0.5, colour jitter strength 0.5, no blur, LARS at 1.0 × batch/256 with 10 warmup epochs and cosine
decay, 1000 epochs. Reads an image folder laid out as <dir>/{train,test}/<class>/<image>:

    python -m experiments.simclr --config=experiments/configs/simclr_cifar10.py \
        --config.data.folder=<dir>/cifar10-jpeg

The 30-minute CPU quality run of BUILD_NOTES.md shrinks it (width, epochs, batch) with overrides.
"""

import ml_collections

from experiments.configs import simclr


def get_config() -> ml_collections.ConfigDict:
    config = simclr.get_config()
    config.model = "resnet18"
    config.model_options = ml_collections.ConfigDict({"cifar_stem": True, "width": 64})
    config.head_layers = 2
    config.head_hidden_dim = 512
    config.projection_dim = 128
    config.temperature = 0.5
    config.batch_size = 512
    config.epochs = 1000
    config.warmup_epochs = 10
    config.learning_rate = 1.0
    config.weight_decay = 1e-6

    config.augment.min_area = 0.08
    config.augment.flip_probability = 0.5
    config.augment.jitter_strength = 0.5
    config.augment.jitter_probability = 0.8
    config.augment.grayscale_probability = 0.2
    config.augment.blur_probability = 0.0

    config.data.name = "image_folder"
    config.data.folder = ""
    config.data.image_size = 32

    config.log_every = 20
    config.checkpoint_every = 500
    config.eval_every = 0
    return config
