"""Every optimizer of lecture 7 on the same two-layer network and the embedded digits.

    python -m experiments.optimizers                       # the table of MEASUREMENTS.md
    python -m experiments.optimizers --config.epochs=3 --config.lbfgs_steps=20 --config.newton_steps=3   # CI smoke run
    python -m experiments.optimizers --config.optimizers=sgd,adam --config.learning_rates.adam=0.003
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 64 = 22 steps an epoch: one record an epoch.
    config = training.base(batch_size=64, epochs=30, log_every=22, checkpoint_every=220, eval_every=0)
    config.hidden = 128  # units of the two-layer network's hidden layer
    config.optimizers = "sgd,momentum,nesterov,adagrad,rmsprop,adam,lars"  # comma-separated
    # constant (the default: the curves compare the rules themselves, and the Polyak average has
    # noise to remove), cosine or warmup_cosine; LARS's weight decay is on its masked tensors only.
    training.optimizer(config, "sgd", 0.3, schedule="constant", weight_decay=1e-4, warmup_epochs=1)
    # Learning rate (peak, under a decaying schedule) of each optimizer. Momentum and Nesterov keep
    # ε inside the velocity, so their step is about ε/(1 − β) = 10ε.
    # LARS steps its kernels by ε·η‖θ‖/‖g‖ (η = 0.001) and its biases by plain momentum.
    config.learning_rates = ml_collections.ConfigDict({
        "sgd": 0.3, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.05, "rmsprop": 0.003,
        "adam": 0.003, "lars": 1.0})
    training.supervised(config)
    config.polyak_decay = 0.99  # EMA of the parameters, evaluated beside the last iterate
    # Full batch: a softmax classifier (mean cross-entropy + l2/2 ‖θ‖²) fitted by L-BFGS and Newton.
    config.l2 = 1e-3
    config.lbfgs_steps = 100
    config.newton_steps = 8
    return config
