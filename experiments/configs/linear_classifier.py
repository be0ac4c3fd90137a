"""Linear classifiers (multiclass SVM and softmax) on the embedded digits, trained by minibatch SGD.

    python -m experiments.linear_classifier            # SVM and softmax test accuracy (MEASUREMENTS.md)
    python -m experiments.linear_classifier --config.epochs=2 --config.losses=softmax   # a quick run
    python -m experiments.linear_classifier --config.data.folder=<dir>   # any image folder
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 64 = 22 steps an epoch: one record an epoch.
    config = training.base(batch_size=64, epochs=60, log_every=22, checkpoint_every=220, eval_every=0)
    config.losses = "svm,softmax"  # comma-separated: the classifiers trained side by side
    config.weight_std = 1e-3  # W ~ weight_std · N(0, 1)
    training.optimizer(config, "sgd", 0.5, schedule="constant", weight_decay=0.0)
    training.supervised(config, l2_penalty=1e-4)  # loss = data loss + λ·Σ W² (biases excluded)
    return config
