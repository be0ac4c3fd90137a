"""Datasets through TFDS (no TensorFlow at run time), the input pipeline, preprocessing, augmentation."""

from visionax.data.datasets import DatasetSpec, as_arrays, data_source, load_arrays, num_classes

__all__ = ["DatasetSpec", "as_arrays", "data_source", "load_arrays", "num_classes"]
