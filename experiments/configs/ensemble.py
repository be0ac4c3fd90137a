"""Ensembles and averaging on the embedded digits: 8 small CNNs trained in one vmapped program.

    python -m experiments.ensemble                                # the table of MEASUREMENTS.md
    python -m experiments.ensemble --config.epochs=2 --config.members=4 --config.ensemble_sizes=2,4 \
        --config.snapshot_cycles=2                                # CI smoke run
    python -m experiments.ensemble --config.independent_orders=False   # every member reads one batch order
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 128 = 11 steps an epoch; 15 epochs as experiments.classify trains.
    config = training.base(batch_size=128, epochs=15, log_every=11, checkpoint_every=55, eval_every=0)
    config.model = "small_cnn"
    config.model_options = ml_collections.ConfigDict()
    config.dtype = "float32"
    config.conv_impl = "xla"
    training.optimizer(config, "adam", 0.003, schedule="cosine", weight_decay=1e-4)
    training.supervised(config)  # with polyak_decay: each member keeps the Polyak average of its weights
    config.members = 8  # models trained side by side in one vmapped program; member i is seeded seed + i
    config.ensemble_sizes = "2,4,8"  # comma-separated: ensembles of the first k members
    config.independent_orders = True  # member i reads the batch order of seed + i (False: all read seed's)
    # The snapshot ensemble: one model (seed `seed`) trained for the same epochs with the learning rate
    # restarted snapshot_cycles times (cyclic cosine), a checkpoint at the end of each cycle.
    config.snapshot_cycles = 5
    return config
