"""The classifier that scores a generative experiment's samples (`visionax.evaluate.generative`): the
one trained by `python -m experiments.classify` on the same data, named by `config.classifier_from`,
or, when that is empty, trained here with classify's own config on `config.data` in
`<workdir>/classifier` (resumed like any run, so a restarted experiment does not train it twice)."""

from __future__ import annotations

import pathlib

import ml_collections

from experiments import classify
from experiments.configs import classify as classify_config
from visionax.evaluate.generative import ScoringClassifier, load_scoring_classifier

CLASSIFIER_DIR = "classifier"


def classifier_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """classify's default config on `config.data` for `config.classifier_epochs` epochs."""
    trained = classify_config.get_config()
    trained.data = ml_collections.ConfigDict(config.data.to_dict())
    trained.epochs = config.classifier_epochs
    trained.seed = config.seed
    return trained


def scoring_classifier(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> ScoringClassifier:
    """The classifier of `config.classifier_from`, or one trained in `<workdir>/classifier`."""
    if config.classifier_from:
        return load_scoring_classifier(config.classifier_from)
    directory = pathlib.Path(workdir) / CLASSIFIER_DIR
    classify.train_and_evaluate(classifier_config(config), str(directory))
    return load_scoring_classifier(directory)
