"""scikit-learn's bundled 8×8 handwritten digits as a TFDS builder: no download, fixed split."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def source_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as this builder stores them: uint8 `[1797, 8, 8]` (0..16 → 0..255) and
    int64 labels `[1797]`."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.round(digits.images * (255.0 / 16.0)).astype(np.uint8), digits.target.astype(np.int64)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """A fixed stratified split: TEST_FRACTION of each class (chosen with SPLIT_SEED) is the test set."""
    generator = np.random.default_rng(SPLIT_SEED)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.append(generator.permutation(members)[: round(TEST_FRACTION * len(members))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return {"train": train, "test": test}


class VisionaxDigits(tfds.core.GeneratorBasedBuilder):
    """1,797 grey 8×8 digits (0..16 scaled to uint8 0..255), 1,438 train / 359 test, 10 classes."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "scikit-learn digits, stratified 80/20 split with seed 0."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="scikit-learn's bundled UCI handwritten digits (8×8, one channel).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=10),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        images, labels = source_digits()
        images = images[..., None]
        return {
            split: self._generate_examples(images, labels, indices)
            for split, indices in split_indices(labels).items()
        }

    def _generate_examples(self, images, labels, indices):
        for index in indices:
            yield int(index), {"image": images[index], "label": int(labels[index])}
