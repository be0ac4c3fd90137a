"""The caption-folder builder: Flickr8k/COCO-style folders, a train-caption vocabulary, one example per
image with all its captions, and one-line errors for what a real folder gets wrong."""

import json

import numpy as np
import pytest
from PIL import Image

from visionax.data import captions
from visionax.errors import UserError

CAPTIONS = {
    "train": {"b.png": ["A dog runs.", "The dog, running!"], "a.png": ["A cat sits on a mat."],
              "c.png": ["A dog and a cat.", "Dogs", "a cat"]},
    "test": {"x.png": ["A zebra runs; the dog sits."]},
}


def make_folder(root, listings=CAPTIONS, size=(10, 12), seed=0):
    """PNG images and captions.json files; returns {(split, name): pixels}."""
    generator = np.random.default_rng(seed)
    pixels = {}
    for split, listing in listings.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        for name in listing:
            pixels[(split, name)] = generator.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels[(split, name)]).save(root / split / "images" / name)
        (root / split / "captions.json").write_text(json.dumps(listing))
    return pixels


def expect_error(pattern, root, tmp_path):
    """Loading `root` raises a one-line UserError matching `pattern`."""
    with pytest.raises(UserError, match=pattern) as error:
        load(root, tmp_path)
    assert "\n" not in str(error.value)


def load(root, tmp_path, split="train", **options):
    return captions.load_caption_folder(str(root), split, image_size=6, data_dir=str(tmp_path / "tfds"), **options)


def test_tokenize_and_the_vocabulary_built_on_train_captions():
    assert captions.tokenize("The dog's ball, RED.") == ["the", "dog", "'", "s", "ball", ",", "red", "."]
    vocabulary = captions.build_word_vocabulary(
        [caption for listing in CAPTIONS["train"].values() for caption in listing], min_count=2)
    # counts: a 5, dog 3, cat 3, . 3, the 1, ... → a, then cat/dog/. by count (ties alphabetical: "." < "cat" < "dog")
    assert vocabulary.words == ("<NULL>", "<START>", "<END>", "<UNK>", "a", ".", "cat", "dog")
    np.testing.assert_array_equal(vocabulary.encode("A zebra, dog.", 7), [1, 4, 3, 3, 7, 5, 2])
    np.testing.assert_array_equal(vocabulary.encode("a a a a a a a", 5), [1, 4, 4, 4, 2])  # cut at 3 words
    assert vocabulary.decode([1, 4, 3, 7, 2, 0, 6]) == "a <UNK> dog"


def test_a_folder_gives_resized_images_with_all_their_captions(tmp_path):
    root = tmp_path / "flickr"
    pixels = make_folder(root)
    train = load(root, tmp_path, min_count=1, max_length=8)
    assert train.files == ("a.png", "b.png", "c.png")
    for index, name in enumerate(train.files):
        expected = np.asarray(Image.fromarray(pixels[("train", name)]).resize((6, 6), Image.BILINEAR))
        np.testing.assert_array_equal(train.images[index], expected)
    vocabulary = captions.build_word_vocabulary(
        [caption for listing in CAPTIONS["train"].values() for caption in listing], min_count=1)
    assert train.vocabulary == vocabulary
    np.testing.assert_array_equal(train.image_index, [0, 1, 1, 2, 2, 2])
    expected = [vocabulary.encode(caption, 8) for name in train.files for caption in CAPTIONS["train"][name]]
    np.testing.assert_array_equal(train.captions, expected)
    assert vocabulary.decode(train.captions[2]) == "the dog , running !"
    test = load(root, tmp_path, min_count=1, max_length=8)  # the same folder and options: read, not rebuilt
    np.testing.assert_array_equal(test.captions, train.captions)
    test = load(root, tmp_path, split="test", min_count=1, max_length=8)
    assert test.vocabulary == vocabulary  # the test split uses the train vocabulary
    assert vocabulary.decode(test.captions[0]) == "a <UNK> runs <UNK> the dog"  # "zebra", ";" unseen; 6 words
    assert "zebra" not in vocabulary.words and "sits" in vocabulary.words


def test_a_changed_caption_file_is_prepared_again_and_unlisted_images_are_noted(tmp_path, capsys):
    root = tmp_path / "changing"
    make_folder(root)
    load(root, tmp_path)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "train" / "images" / "stray.png")
    listing = dict(CAPTIONS["train"], **{"a.png": ["zebra zebra"]})
    (root / "train" / "captions.json").write_text(json.dumps(listing))
    data = load(root, tmp_path)
    assert data.vocabulary.decode(data.captions[0]) == "zebra zebra"
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "1 files in" in notes[0] and "train/images/stray.png" in notes[0]


def test_what_a_real_folder_gets_wrong_is_a_one_line_user_error(tmp_path):
    expect_error(r"caption folder '.*absent' does not exist; pass --config.data.folder=", tmp_path / "absent", tmp_path)
    root = tmp_path / "broken"
    make_folder(root)
    (root / "test" / "captions.json").unlink()
    expect_error(r"caption file '.*test/captions.json' does not exist; write .* JSON object", root, tmp_path)
    (root / "test" / "captions.json").write_text("{not json")
    expect_error(r"captions.json' is not UTF-8 JSON \(Expecting property name", root, tmp_path)
    (root / "test" / "captions.json").write_text(json.dumps({"x.png": "one caption"}))
    expect_error(r"maps 'x.png' to \"one caption\", not a list of strings", root, tmp_path)
    (root / "test" / "captions.json").write_text(json.dumps({"x.png": []}))
    expect_error(r"lists no captions for 'x.png'", root, tmp_path)
    (root / "test" / "captions.json").write_text(json.dumps({"x.png": ["a"], "gone.jpg": ["b"]}))
    expect_error(r"image '.*test/images/gone.jpg' is listed in '.*test/captions.json' "
                 r"but absent; add the image or remove its entry", root, tmp_path)
    (root / "test" / "captions.json").write_text(json.dumps({"x.png": ["a"]}))
    (root / "train" / "images" / "a.png").write_bytes(b"not a png")
    expect_error(r"image '.*train/images/a.png' cannot be decoded", root, tmp_path)
    (root / "test" / "images" / "x.png").unlink()
    (root / "test" / "images").rmdir()
    expect_error(r"has no test/images/ subfolder; put the test images in", root, tmp_path)
