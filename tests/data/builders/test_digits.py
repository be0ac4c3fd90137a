"""The embedded digits builder: scikit-learn's digits, a fixed stratified split."""

import numpy as np
from sklearn.datasets import load_digits

from visionax import data
from visionax.data.builders import digits as digits_builder


def test_digits_equal_scikit_learn_with_a_fixed_split(digits_dir):
    reference = load_digits()
    expected = np.round(reference.images * 255.0 / 16.0).astype(np.uint8)[..., None]
    split = digits_builder.split_indices(reference.target)
    assert len(np.intersect1d(split["train"], split["test"])) == 0
    assert (len(split["train"]), len(split["test"])) == (1438, 359)  # the sizes the docs and configs quote
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
