"""Per-layer activation statistics of deep tanh and ReLU MLPs under three weight initialisations.

    python -m experiments.init_study                       # the std table of MEASUREMENTS.md
    python -m experiments.init_study --config.width=4096 --config.depth=7
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.depth = 10  # hidden layers
    config.width = 1024  # units per layer (the input has the same width)
    config.batch_size = 512  # input rows x ~ N(0, 1)
    config.activations = "tanh,relu"  # comma-separated: tanh, relu
    config.inits = "small_random,xavier,kaiming"  # comma-separated names from visionax.layers.init
    config.small_std = 0.01  # std of the small random init
    return config
