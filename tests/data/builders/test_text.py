"""The text builder and character data: the embedded documentation, a held-out tail, a character
vocabulary, and add-one unigram/bigram baselines checked against hand counts."""

import collections
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from visionax.data import text
from visionax.data.builders import text as text_builder
from visionax.errors import UserError


@pytest.fixture(scope="module")
def text_dir(tmp_path_factory) -> str:
    """A TFDS data directory with the embedded text prepared once."""
    directory = str(tmp_path_factory.mktemp("tfds"))
    text.load_text("train", data_dir=directory)
    return directory


def test_embedded_text_is_the_sorted_topics_with_the_last_tenth_held_out(text_dir):
    from pydoc_data.topics import topics

    whole = "\n".join(topics[key] for key in sorted(topics))
    train, test = text.load_text("train", data_dir=text_dir), text.load_text("test", data_dir=text_dir)
    assert train + test == whole  # assembled from chunks in order: nothing lost, reordered or repeated
    assert len(test) == round(0.1 * len(whole)) and len(train) == len(whole) - len(test)
    assert len(train) > text_builder.CHUNK_CHARACTERS * 50  # many records, so order matters


def test_vocabulary_round_trip_and_unknown_characters(text_dir):
    encoded = text.load_encoded_text(data_dir=text_dir)
    train = text.load_text("train", data_dir=text_dir)
    vocabulary = encoded.vocabulary
    assert vocabulary.characters == tuple(sorted(set(train)))
    assert vocabulary.size == len(set(train)) + 1
    assert encoded.train.dtype == np.int32 and vocabulary.decode(encoded.train) == train
    assert encoded.train.min() == 1  # every train character is known
    for index in (0, 1000, len(train) - 1):
        assert encoded.train[index] == vocabulary.characters.index(train[index]) + 1
    test = text.load_text("test", data_dir=text_dir)
    unknown = [character not in vocabulary.characters for character in test]
    np.testing.assert_array_equal(encoded.test == text.UNKNOWN_ID, unknown)
    tiny = text.build_vocabulary("bca")
    np.testing.assert_array_equal(tiny.encode("abcxa"), [1, 2, 3, 0, 1])
    assert tiny.decode([1, 2, 3, 0, 1]) == "abc\N{REPLACEMENT CHARACTER}a"


def test_a_text_file_replaces_the_embedded_text(tmp_path):
    file = tmp_path / "poem.txt"
    body = "".join(f"line {index}: é ünïcode\r\n" for index in range(40))
    file.write_bytes(body.encode("utf-8"))
    data_dir = str(tmp_path / "tfds")
    train = text.load_text("train", text_file=str(file), data_dir=data_dir)
    test = text.load_text("test", text_file=str(file), data_dir=data_dir)
    cut = len(body) - round(0.1 * len(body))
    assert (train, test) == (body[:cut], body[cut:])  # exact: "\r\n" kept, split at 90% of characters
    encoded = text.EncodedText.from_config({"text_file": str(file), "data_dir": data_dir})
    assert encoded.vocabulary.decode(encoded.test) == test
    file.write_bytes(b"changed " * 20)  # a changed file is prepared again, not read stale
    assert text.load_text("test", text_file=str(file), data_dir=data_dir) == ("changed " * 20)[-16:]


def test_bad_text_files_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"text file '.*absent.txt' does not exist; pass --config.data.text_file="):
        text.load_text("train", text_file=str(tmp_path / "absent.txt"), data_dir=str(tmp_path))
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1") * 10)
    with pytest.raises(UserError, match=r"is not UTF-8 \(byte 3\); convert it"):
        text.load_text("train", text_file=str(tmp_path / "latin1.txt"), data_dir=str(tmp_path))
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(UserError, match="too few for a held-out split"):
        text.load_text("train", text_file=str(tmp_path / "short.txt"), data_dir=str(tmp_path))


def reference_bits(train: str, test: str, alphabet: int) -> tuple[float, float]:
    """Add-one unigram and bigram bits per character from Python counts."""
    unigrams = collections.Counter(train)
    unigram = -sum(math.log2((unigrams[c] + 1) / (len(train) + alphabet)) for c in test) / len(test)
    pairs = collections.Counter(itertools.pairwise(train))
    starts = collections.Counter(train[:-1])
    bigram = -sum(math.log2((pairs[(b, c)] + 1) / (starts[b] + alphabet))
                  for b, c in itertools.pairwise(test)) / (len(test) - 1)
    return unigram, bigram


def test_baselines_equal_hand_counts():
    # train ids 1 2 1 2, test 2 1 1, V = 3: n(1,2)=2, n(2,1)=1, n(1,·)=2, n(2,·)=1.
    # bigram: p(1|2) = (1+1)/(1+3) = 1/2, p(1|1) = (0+1)/(2+3) = 1/5 → (1 + log2 5) / 2 bits.
    # unigram: n(1)=n(2)=2, N=4: p(2) = p(1) = 3/7 → log2(7/3) bits.
    train, test = np.array([1, 2, 1, 2]), np.array([2, 1, 1])
    assert text.bigram_bits_per_char(train, test, 3) == pytest.approx((1 + math.log2(5)) / 2, rel=1e-12)
    assert text.unigram_bits_per_char(train, test, 3) == pytest.approx(math.log2(7 / 3), rel=1e-12)
    vocabulary = text.build_vocabulary("the cat sat on the mat")
    train_text, test_text = "the cat sat on the mat", "a hat on the cat, that"
    unigram, bigram = reference_bits(train_text, test_text, vocabulary.size)
    train_ids, test_ids = vocabulary.encode(train_text), vocabulary.encode(test_text)
    # "," is unknown (id 0): Python's counts of the raw character and of id 0 agree, both zero.
    assert text.unigram_bits_per_char(train_ids, test_ids, vocabulary.size) == pytest.approx(unigram, rel=1e-12)
    assert text.bigram_bits_per_char(train_ids, test_ids, vocabulary.size) == pytest.approx(bigram, rel=1e-12)
    with pytest.raises(ValueError, match="ids must lie in"):
        text.bigram_bits_per_char(train_ids, test_ids, 3)


def test_baselines_on_the_embedded_text_are_ordered(text_dir):
    encoded = text.load_encoded_text(data_dir=text_dir)
    size = encoded.vocabulary.size
    unigram = text.unigram_bits_per_char(encoded.train, encoded.test, size)
    bigram = text.bigram_bits_per_char(encoded.train, encoded.test, size)
    assert bigram < unigram < math.log2(size)  # context helps; counts beat the uniform code
    assert 4.0 < unigram < 5.5 and 3.0 < bigram < 4.2, (unigram, bigram)


def test_reading_the_text_never_imports_tensorflow(text_dir, tmp_path):
    """A fresh process with a stand-in `tensorflow` that records its import reads the prepared text."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    marker = tmp_path / "tensorflow_was_imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\nraise ImportError('fake')\n")
    script = ("import importlib.util\nfrom visionax.data import text\n"
              f"assert len(text.load_encoded_text(data_dir={text_dir!r}).test) > 0\n"
              f"assert importlib.util.find_spec('tensorflow').origin.startswith({str(tmp_path)!r})\n")
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path / "fake"), *sys.path]))
    subprocess.run([sys.executable, "-c", script], check=True, env=environment)
    assert not marker.exists()
