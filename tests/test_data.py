"""TFDS builders prepared to array_record without TensorFlow, checked against their sources."""

import pathlib

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from sklearn.datasets import load_digits

from visionax import data
from visionax.data import datasets
from visionax.data.builders import digits as digits_builder
from visionax.errors import UserError


def test_tensorflow_is_not_imported(digits_dir):
    import sys

    data.load_arrays("digits", "train", data_dir=digits_dir)
    assert "tensorflow" not in sys.modules


def test_digits_equal_scikit_learn_with_a_fixed_split(digits_dir):
    reference = load_digits()
    expected = np.round(reference.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    split = digits_builder.split_indices(reference.target)
    assert len(np.intersect1d(split["train"], split["test"])) == 0
    assert len(split["train"]) + len(split["test"]) == len(reference.target)
    for name in ("train", "test"):
        images, labels = data.load_arrays("digits", name, data_dir=digits_dir)
        assert images.shape == (len(split[name]), 8, 8, 1) and images.dtype == np.uint8
        # Records are stored in TFDS's shuffled order: compare as sets of (image, label) rows.
        got = sorted(zip(map(bytes, images.reshape(len(images), -1)), labels.tolist()))
        want = sorted(zip(map(bytes, expected[split[name]].reshape(len(split[name]), -1)),
                          reference.target[split[name]].tolist()))
        assert got == want
    # The split is stratified: every class has 20% ± 1 example in the test set.
    test_counts = np.bincount(reference.target[split["test"]], minlength=10)
    all_counts = np.bincount(reference.target, minlength=10)
    np.testing.assert_allclose(test_counts, 0.2 * all_counts, atol=1)


def test_image_folder_is_resized_with_pillow(tmp_path):
    root = tmp_path / "pictures"
    generator = np.random.default_rng(0)
    originals = {}
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(3):
                pixels = generator.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
                originals[(split, name, index)] = pixels
    images, labels = data.load_arrays(
        "image_folder", "train", folder=str(root), image_size=6, data_dir=str(tmp_path / "tfds")
    )
    assert images.shape == (6, 6, 6, 3)
    np.testing.assert_array_equal(np.bincount(labels), [3, 3])
    expected = {
        bytes(np.asarray(Image.fromarray(pixels).resize((6, 6), Image.BILINEAR))): ["cat", "dog"].index(name)
        for (split, name, _), pixels in originals.items() if split == "train"
    }
    assert {bytes(image): int(label) for image, label in zip(images, labels)} == expected


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--config.data.folder"):
        data.load_arrays("image_folder", "train", folder=str(tmp_path / "absent"), data_dir=str(tmp_path))


def test_unknown_dataset_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'no_such_dataset'"):
        data.load_arrays("no_such_dataset", "train", data_dir=str(tmp_path))


def test_catalog_dataset_without_tensorflow_names_the_folder_option(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "tensorflow_available", lambda: False)
    with pytest.raises(UserError, match="image_folder.*--config.data.folder"):
        data.load_arrays("cifar10", "train", data_dir=str(tmp_path))


def test_catalog_dataset_through_mock_data(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "tensorflow_available", lambda: True)
    with tfds.testing.mock_data(num_examples=12):
        spec = data.DatasetSpec(name="cifar10", data_dir=str(tmp_path))
        source = data.data_source(spec, "train")
        images, labels = data.as_arrays(source)
        assert data.num_classes(spec) == 10
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images[3], np.asarray(source[3]["image"]))
    assert labels.min() >= 0 and labels.max() < 10
