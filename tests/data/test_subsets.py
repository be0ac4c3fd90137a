"""Subsets of a split: classes relabelled, a stratified fraction of the labels, a validation split held
out of training; deterministic, disjoint, and read by `setup` as the run's splits."""

import ml_collections
import numpy as np
import pytest

from visionax import data
from visionax.data.subsets import SubsetSource, class_indices, parse_classes, stratified_fraction, validation_split
from visionax.errors import UserError
from visionax.train import setup

LABELS = np.repeat(np.arange(4), [10, 20, 3, 7])[np.random.default_rng(0).permutation(40)]


def test_classes_are_parsed_and_relabelled_in_the_order_given():
    assert parse_classes("", 4) == (0, 1, 2, 3)
    assert parse_classes("3,1", 4) == (3, 1)
    for text in ("1,1", "4", "-1", "a", "1,"):
        with pytest.raises(UserError, match="data.classes"):
            parse_classes(text, 4)
    indices, relabel = class_indices(LABELS, (3, 1))
    np.testing.assert_array_equal(indices, np.flatnonzero((LABELS == 3) | (LABELS == 1)))
    source = SubsetSource([{"image": index, "label": int(label)} for index, label in enumerate(LABELS)], indices, relabel)
    assert len(source) == 27
    assert [source[i]["image"] for i in range(len(source))] == indices.tolist()
    assert [source[i]["label"] for i in range(len(source))] == [0 if LABELS[i] == 3 else 1 for i in indices]


@pytest.mark.parametrize("fraction, counts", [(0.1, [1, 2, 1, 1]), (0.5, [5, 10, 2, 4]), (1.0, [10, 20, 3, 7])])
def test_a_stratified_fraction_keeps_round_f_n_of_each_class_at_least_one(fraction, counts):
    chosen = stratified_fraction(LABELS, fraction, seed=3)
    np.testing.assert_array_equal(np.bincount(LABELS[chosen], minlength=4), counts)
    np.testing.assert_array_equal(chosen, stratified_fraction(LABELS, fraction, seed=3))  # deterministic
    assert set(stratified_fraction(LABELS, 0.1, seed=3)) <= set(stratified_fraction(LABELS, 0.5, seed=3))  # nested
    assert not np.array_equal(stratified_fraction(LABELS, 0.5, seed=3), stratified_fraction(LABELS, 0.5, seed=4))
    with pytest.raises(UserError, match="label_fraction=0"):
        stratified_fraction(LABELS, 0.0, seed=3)


def test_the_validation_split_is_stratified_and_disjoint_from_training():
    train, validation = validation_split(LABELS, 0.2, seed=0)
    assert len(np.intersect1d(train, validation)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, validation])), np.arange(40))
    np.testing.assert_array_equal(np.bincount(LABELS[validation], minlength=4), [2, 4, 1, 1])  # round(0.2 n), >= 1
    np.testing.assert_array_equal(validation, validation_split(LABELS, 0.2, seed=0)[1])
    with pytest.raises(UserError, match="class 0 has 1 training example"):
        validation_split(np.array([0, 1, 1]), 0.5, seed=0)
    with pytest.raises(UserError, match="validation_fraction=1"):
        validation_split(LABELS, 1.0, seed=0)


def rows(images):
    return {bytes(image) for image in images.reshape(len(images), -1)}


def test_setup_reads_the_subsets_of_the_digits(digits_dir):
    config = ml_collections.ConfigDict({"seed": 0, "batch_size": 8, "parallel": "shard_map", "validation_fraction": 0.2,
                                        "data": {"name": "digits", "data_dir": digits_dir, "classes": "7,5",
                                                 "label_fraction": 0.1}})
    run = setup.setup(config)
    all_train, all_train_labels = data.load_arrays("digits", "train", data_dir=digits_dir)
    all_test, all_test_labels = data.load_arrays("digits", "test", data_dir=digits_dir)
    counts = np.bincount(all_train_labels)[[7, 5]]  # 146 sevens and 146 fives in training
    held_out = np.round(0.2 * counts).astype(int)
    assert run.num_classes == 2 and run.classes == (7, 5)
    np.testing.assert_array_equal(np.bincount(run.validation.labels), held_out)
    np.testing.assert_array_equal(np.bincount(run.train.labels), np.maximum(1, np.round(0.1 * (counts - held_out))))
    np.testing.assert_array_equal(np.bincount(run.test.labels), np.bincount(all_test_labels)[[7, 5]])
    for split, source in {"train": run.train, "validation": run.validation}.items():
        images, labels = source.images, source.labels
        for new_label, old_label in enumerate((7, 5)):
            assert rows(images[labels == new_label]) <= rows(all_train[all_train_labels == old_label]), split
    assert not rows(run.train.images) & rows(run.validation.images)
    assert rows(run.test.images[run.test.labels == 0]) == rows(all_test[all_test_labels == 7])
    assert run.batches.steps_per_epoch == len(run.train.labels) // 8
    plain = setup.setup(ml_collections.ConfigDict({"seed": 0, "batch_size": 8, "parallel": "shard_map",
                                                   "data": {"name": "digits", "data_dir": digits_dir}}))
    assert plain.validation is None and plain.num_classes == 10 and len(plain.train.labels) == 1438
