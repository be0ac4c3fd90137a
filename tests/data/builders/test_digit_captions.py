"""The digit-caption builder: canvases of embedded digits whose captions name them left to right,
checked against the pixels in the stored boxes."""

import numpy as np
import pytest

from visionax.data import captions
from visionax.data.builders import digit_captions, digits

NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tfds"))


def load(split, data_dir, num_train=240, num_test=80, seed=0):
    return captions.load_digit_captions(split, num_train=num_train, num_test=num_test, seed=seed,
                                        data_dir=data_dir)


def test_the_vocabulary_is_fixed():
    vocabulary = captions.digit_vocabulary()
    assert vocabulary.words == ("<NULL>", "<START>", "<END>", "<UNK>", *NAMES)
    assert [vocabulary.word_id(name) for name in NAMES] == list(range(4, 14))
    np.testing.assert_array_equal(vocabulary.encode("three one four", 6), [1, 7, 5, 8, 2, 0])
    assert vocabulary.decode([1, 7, 5, 8, 2, 0]) == "three one four"


@pytest.mark.parametrize("split", ["train", "test"])
def test_captions_name_the_pixels_in_the_boxes_in_reading_order(split, data_dir):
    images, labels = digit_captions.source_digits()
    pool = digits.split_indices(labels)[split]
    labels_of_pixels = {}
    for index in pool:  # every label an 8×8 picture of this split has (duplicates included)
        labels_of_pixels.setdefault(bytes(images[index]), set()).add(int(labels[index]))
    data = load(split, data_dir)
    assert data.images.shape == (240 if split == "train" else 80, 24, 48, 1)
    assert data.vocabulary == captions.digit_vocabulary()
    assert set(data.num_digits.tolist()) == {1, 2, 3, 4}
    for image, caption, count, boxes, sources in zip(data.images, data.captions, data.num_digits,
                                                     data.boxes, data.sources):
        words = data.vocabulary.decode(caption).split()
        assert len(words) == count
        np.testing.assert_array_equal(caption[count + 1:], [captions.END] + [captions.NULL] * (4 - count))
        rest = image[..., 0].copy()
        for word, (top, left, bottom, right) in zip(words, boxes[:count]):
            crop = image[top:bottom, left:right, 0]
            assert (bottom - top, right - left) == (8, 8)
            assert NAMES.index(word) in labels_of_pixels[bytes(crop)]  # the word names the pixels
            rest[top:bottom, left:right] = 0
        assert not rest.any()  # nothing drawn outside the boxes
        lefts, rights = boxes[:count, 1], boxes[:count, 3]
        assert np.all(rights[:-1] <= lefts[1:])  # reading order: left to right, columns disjoint
        assert boxes[:count, 2].max() <= 24 and rights.max() <= 48 and boxes[:count].min() >= 0
        assert not boxes[count:].any() and np.all(sources[count:] == -1)
        assert set(sources[:count].tolist()) <= set(pool.tolist())  # test canvases: test digits only
        assert len(set(sources[:count].tolist())) == count
        for source, (top, left, bottom, right) in zip(sources[:count], boxes[:count]):
            np.testing.assert_array_equal(image[top:bottom, left:right, 0], images[source])
    np.testing.assert_array_equal(data.digits[:, 0] + 4, data.captions[:, 1])


def test_canvases_are_a_function_of_seed_split_and_index(data_dir, tmp_path):
    first = load("train", data_dir)
    again = load("train", str(tmp_path / "again"))
    shorter = load("train", data_dir, num_train=40, num_test=10)
    other_seed = load("train", data_dir, seed=1)
    for field in ("images", "captions", "num_digits", "digits", "boxes", "sources"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
        np.testing.assert_array_equal(getattr(first, field)[:40], getattr(shorter, field))
    assert not np.array_equal(first.images, other_seed.images)
    test = load("test", data_dir)
    assert not set(test.sources[test.sources >= 0].tolist()) & set(first.sources[first.sources >= 0].tolist())
