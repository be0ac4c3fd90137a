"""Autoregressive models of 8-bit colour images (256 levels per sub-pixel) on CIFAR-10 from an image folder
<dir>/{train,test}/<class>/<image>. By default the three models at width 96 for 10 epochs, a run for an
accelerator (the published PixelCNN, 3.14 bits/dim, and gated PixelCNN, 3.03, are deeper and wider
still, trained for days of GPUs):

    python -m experiments.pixelcnn --config=experiments/configs/pixelcnn_cifar10.py \
        --config.data.folder=<dir>/cifar10-jpeg

Variant `cpu30`, the 30-minute run of one model on 2 CPU cores (MEASUREMENTS.md): the gated PixelCNN
at width 36 (3 gated layers after the first, 163,200 parameters) with oneDNN's convolutions
(`conv_impl="auto"`: 0.51 s a step at batch 32 on the idle CPU, against 0.80 s with XLA's),
2,000 steps of batch 32 (1.3 epochs), one pass over the 10,000 test images at the end, 24 samples
(3,072 network evaluations of the batch) scored by a classifier trained for one epoch
(`--config.classifier_from=<workdir of a classify run on the same folder>` skips it, and lets the
VAE and GAN runs share one scorer):

    d=$(mktemp -d) && tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C "$d" && \
    python -m experiments.pixelcnn --config=experiments/configs/pixelcnn_cifar10.py:cpu30 \
        --config.data.folder="$d/cifar10-jpeg"
"""

import ml_collections

from experiments.configs import data_sources, pixelcnn


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = pixelcnn.get_config()
    config.data = data_sources.image_folder(image_size=32)
    config.levels = 256
    # 50,000 training images / 32 = 1,562 steps an epoch
    config.batch_size = 32
    config.epochs = 10
    config.learning_rate = 0.001
    config.log_every = 50
    config.eval_every = 0  # a pass over the 10,000 test images costs minutes: only at the end
    config.checkpoint_every = 500
    config.model_options = ml_collections.ConfigDict({
        "pixelcnn": {"features": 96, "depth": 6, "kernel_size": 3, "first_kernel_size": 7, "output_features": 192},
        "gated_pixelcnn": {"features": 96, "depth": 6, "kernel_size": 3, "first_kernel_size": 7,
                           "output_features": 192},
        "row_lstm": {"features": 48, "depth": 2, "kernel_size": 3, "first_kernel_size": 7, "output_features": 192,
                     "conv_impl": "gemm"},
    })
    config.num_samples = 100
    config.sample_batch_size = 50
    if variant == "cpu30":
        config.models = "gated_pixelcnn"
        config.model_options.gated_pixelcnn = ml_collections.ConfigDict(
            {"features": 36, "depth": 3, "kernel_size": 3, "first_kernel_size": 7, "output_features": 72})
        config.conv_impl = "auto"  # oneDNN: 1.6× XLA's step on this CPU
        config.num_steps = 2000  # 64,000 images, 1.3 epochs
        config.learning_rate = 0.002
        config.num_samples = 24
        config.sample_batch_size = 24
        config.classifier_epochs = 1  # classify's small CNN, ~45% test accuracy after its one epoch
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of pixelcnn_cifar10.py; use :cpu30 or none")
    return config
