"""Datasets by name: prepared to array_record without TensorFlow, catalog names through TFDS's mock data."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from visionax import data
from visionax.data import datasets
from visionax.errors import UserError


def test_tensorflow_is_not_imported(digits_dir, tmp_path):
    """Reading a prepared dataset never imports TensorFlow: a stand-in `tensorflow` package that
    records its import is first on the path of a fresh process (so the check holds whether or not
    the real one is installed), and stays unimported."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    marker = tmp_path / "tensorflow_was_imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('fake')\n")
    script = (
        "import importlib.util, sys\n"
        "from visionax import data\n"
        f"images, labels = data.load_arrays('digits', 'train', data_dir={digits_dir!r})\n"
        "from visionax.data.pipeline import Batches\n"
        f"Batches(data.data_source(data.DatasetSpec(data_dir={digits_dir!r}), 'train'), 64, 0).host_batch(3)\n"
        f"assert importlib.util.find_spec('tensorflow').origin.startswith({str(tmp_path)!r})\n"
        "print(len(images))\n")
    environment = {**os.environ, "PYTHONPATH": f"{tmp_path / 'fake'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                             timeout=300)
    assert process.returncode == 0, process.stderr
    assert int(process.stdout.split()[-1]) > 1000
    assert not marker.exists(), "reading the digits imported tensorflow"


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
