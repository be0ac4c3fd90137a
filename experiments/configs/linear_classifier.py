"""Linear classifiers (multiclass SVM and softmax) on the embedded digits, trained by minibatch SGD.

Run:  python -m experiments.linear_classifier
      python -m experiments.linear_classifier --config.epochs=5 --config.losses=softmax   # CI smoke run
      python -m experiments.linear_classifier --config.data.name=image_folder --config.data.folder=<dir>
"""

import ml_collections

from experiments.configs import data


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.losses = "svm,softmax"  # comma-separated: svm, softmax
    config.batch_size = 64
    config.epochs = 60
    config.learning_rate = 0.5
    config.weight_decay = 1e-4  # λ of λ·l2(W) (biases excluded)
    config.svm_margin = 1.0

    config.data = data.digits()
    return config
