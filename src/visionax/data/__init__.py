"""Datasets through TFDS (no TensorFlow at run time), the input pipeline, preprocessing, augmentation.

The dataset functions load tensorflow_datasets on first use, so `visionax.data.augment`,
`.preprocess` and `.pipeline` import without it (e.g. on a machine with only JAX for benchmarks).
"""

import importlib

__all__ = ["DatasetSpec", "as_arrays", "data_source", "decoded", "load_arrays", "num_classes", "stored_source"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module("visionax.data.datasets"), name)
    raise AttributeError(f"module 'visionax.data' has no attribute {name!r}")
