"""Autoregressive image models on the embedded digits (17 grey levels): the PixelCNN, the gated
PixelCNN and PixelRNN's Row LSTM side by side, a few minutes on 2 CPU cores.

    python -m experiments.pixelcnn                       # the digits figures of MEASUREMENTS.md
    python -m experiments.pixelcnn --config.epochs=1 --config.num_samples=20 --config.classifier_epochs=1   # CI smoke
    python -m experiments.pixelcnn --config.models=gated_pixelcnn --config.model_options.gated_pixelcnn.depth=8
    python -m experiments.pixelcnn --config=experiments/configs/pixelcnn_cifar10.py --config.data.folder=<dir>
"""

import ml_collections

from experiments.configs import generative, training


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 64 = 22 steps an epoch
    # 45 epochs: the test bits/dim of all three still fall at the end (60 epochs: the gated model's rise again)
    config = training.base(batch_size=64, epochs=45, log_every=22, checkpoint_every=330, eval_every=165)
    del config.init_from  # every model starts from the seed
    config.num_steps = 0  # optimizer steps per model; 0: epochs × steps per epoch
    config.models = "pixelcnn,gated_pixelcnn,row_lstm"  # comma-separated names of autoregressive.MODELS
    config.levels = 17  # values per sub-pixel (the digits' 17 grey levels exactly; 256 for 8-bit images)
    config.dtype = "float32"
    config.conv_impl = "xla"  # the models' convolutions (visionax.layers.conv.CONV_IMPLS), unless their options say
    # Each model's options (visionax.generative.pixelcnn.PixelCNN, pixelrnn.RowLSTM): features is the
    # width of the residual stream (PixelCNN: its blocks' bottleneck is half of it), depth the residual
    # blocks / gated layers after the first / Row LSTM layers, kernel_size their k (k×k, the gated
    # stacks' k, the Row LSTM's 1×k), first_kernel_size the first (mask A) layer's.
    config.model_options = ml_collections.ConfigDict({
        "pixelcnn": {"features": 64, "depth": 4, "kernel_size": 3, "first_kernel_size": 7, "output_features": 64},
        "gated_pixelcnn": {"features": 32, "depth": 4, "kernel_size": 3, "first_kernel_size": 7,
                           "output_features": 64},
        # gemm: XLA's CPU convolution gradients inside the row scan make a step 9× slower
        "row_lstm": {"features": 32, "depth": 2, "kernel_size": 3, "first_kernel_size": 7, "output_features": 64,
                     "conv_impl": "gemm"},
    })
    training.optimizer(config, "adam", 0.003, schedule="cosine", weight_decay=0.0)
    # Sampling: num_samples images, sample_batch_size at a time (each batch H·W·C network evaluations).
    config.sample_batch_size = 120
    # all 359 test digits against as many samples, as the VAE and GAN experiments: Fréchet distances
    # from different sample counts are biased differently and would not compare
    return generative.sample_quality(config, num_samples=359)
