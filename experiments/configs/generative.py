"""The keys every generative experiment config holds for scoring its samples. Not an experiment
config itself."""

import ml_collections


def sample_quality(config: ml_collections.ConfigDict, *, num_samples: int, classifier_epochs: int = 15
                   ) -> ml_collections.ConfigDict:
    """`config` with the keys of `experiments.sample_quality`: how many samples are scored, and the
    classifier whose features score them (`visionax.evaluate.generative`)."""
    config.num_samples = num_samples  # generated images scored against as many test images
    config.classifier_from = ""  # the workdir of `python -m experiments.classify` on the same data; "": train one
    config.classifier_epochs = classifier_epochs  # when training one in <workdir>/classifier
    return config
