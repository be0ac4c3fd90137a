"""Prepare a TFDS builder to array_record once and read all of a split's records (no TensorFlow)."""

from __future__ import annotations

import tensorflow_datasets as tfds

FILE_FORMAT = "array_record"

__all__ = ["FILE_FORMAT", "prepared", "read_records"]


def prepared(builder: tfds.core.DatasetBuilder) -> tfds.core.DatasetBuilder:
    """`builder`, prepared to array_record if it was not already (embedded builders: no download)."""
    if not builder.is_prepared():
        tfds.disable_progress_bar()
        builder.download_and_prepare(file_format=FILE_FORMAT)
    return builder


def read_records(builder: tfds.core.DatasetBuilder, split: str, order_key: str) -> list[dict]:
    """Every record of `split` (read with `as_data_source`), sorted by the feature `order_key`
    (TFDS stores records in a shuffled order)."""
    source = prepared(builder).as_data_source(split=split)
    records = [source[index] for index in range(len(source))]
    return sorted(records, key=lambda record: record[order_key])
