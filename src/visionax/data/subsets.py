"""Subsets of a labelled split, each chosen deterministically from the labels and a seed: some of the
classes (relabelled 0..k−1 in the order given), a fraction of the labels of each class (the
label-efficiency view of transfer and self-supervised learning), and a validation split carved from
the training split (early stopping, hyperparameter search). Stratified: every class keeps its share,
and at least one example.

`SubsetSource` is the random-access source of the chosen records, so the input pipeline
(`visionax.data.pipeline.Batches`) reads it as it reads a whole split.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from visionax.errors import UserError

__all__ = ["SubsetSource", "parse_classes", "class_indices", "stratified_fraction", "validation_split"]


@dataclasses.dataclass(frozen=True)
class SubsetSource:
    """The records `source[indices[i]]`, their labels mapped through `relabel` (`relabel[label]` the
    new label) when given."""

    source: Sequence[dict]
    indices: np.ndarray
    relabel: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        record = self.source[int(self.indices[index])]
        if self.relabel is None:
            return record
        return {**record, "label": int(self.relabel[int(record["label"])])}


def parse_classes(text: str, num_classes: int) -> tuple[int, ...]:
    """The classes of `config.data.classes`: "" (all), or comma-separated distinct indices such as
    "5,6,7,8,9"; a UserError otherwise."""
    if not str(text).strip():
        return tuple(range(num_classes))
    try:
        classes = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        classes = ()
    if not classes or len(set(classes)) != len(classes) or min(classes) < 0 or max(classes) >= num_classes:
        raise UserError(f"data.classes={text!r} must be distinct comma-separated class indices in 0..{num_classes - 1} "
                        "(empty: every class); pass e.g. --config.data.classes=5,6,7,8,9")
    return classes


def class_indices(labels: np.ndarray, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(the indices of the examples of `classes`, in order; the relabelling table that maps class
    `classes[k]` to k, `[max label + 1]`, −1 elsewhere)."""
    labels = np.asarray(labels)
    relabel = np.full(max(int(labels.max(initial=0)), *classes) + 1, -1, np.int64)
    relabel[list(classes)] = np.arange(len(classes))
    return np.flatnonzero(np.isin(labels, classes)), relabel


def _per_class(labels: np.ndarray, seed: int, stream: int):
    """(class, its example indices in a random order drawn from (seed, stream, class)) for each class."""
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        yield label, np.random.default_rng([seed, stream, int(label)]).permutation(members)


def stratified_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The sorted indices of max(1, round(fraction · n_c)) examples of each class c (n_c its count),
    drawn at random from (seed, class): the same subset for a seed, nested as the fraction grows."""
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"data.label_fraction={fraction} must be in (0, 1]; pass e.g. --config.data.label_fraction=0.1")
    chosen = [order[:max(1, round(fraction * len(order)))] for _, order in _per_class(np.asarray(labels), seed, 0)]
    return np.sort(np.concatenate(chosen))


def validation_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training indices, validation indices), both sorted: round(fraction · n_c) examples of each class
    c held out for validation (at least one, and at least one left for training), drawn at random
    from (seed, class)."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"validation_fraction={fraction} must be in (0, 1) (0: no validation split); pass e.g. "
                        "--config.validation_fraction=0.1")
    train, validation = [], []
    for label, order in _per_class(np.asarray(labels), seed, 1):
        if len(order) < 2:
            raise UserError(f"class {label} has {len(order)} training example(s): too few to hold one out for "
                            "validation; use more data or --config.validation_fraction=0")
        held_out = min(max(1, round(fraction * len(order))), len(order) - 1)
        validation.append(order[:held_out])
        train.append(order[held_out:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))
