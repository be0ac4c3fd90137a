"""Character-level text: the embedded Python documentation (or `data.text_file`) as id arrays, a
character vocabulary, and exact unigram and bigram baselines in bits per character.

The vocabulary is the sorted set of the train split's characters (sorted by code point) with ids
1..V-1; id 0 (UNKNOWN_ID) stands for every character that is not in it, e.g. one that occurs only in
the test split, and decodes to UNKNOWN_CHARACTER (U+FFFD). Both baselines are estimated on the train
ids and evaluated on the test ids with add-one (Laplace) smoothing over all `vocab_size` ids:
    unigram  p(c)     = (n(c) + 1) / (N + V),        bits = -mean_i log2 p(test_i)  over all test ids,
    bigram   p(c | b) = (n(b, c) + 1) / (n(b, ·) + V),  bits = -mean_i log2 p(test_i | test_{i-1}), i ≥ 1,
where N = len(train), n(b, c) counts the train pairs (train_{i-1}, train_i) and n(b, ·) = Σ_c n(b, c);
the bigram averages over the len(test) - 1 transitions inside the test ids (the first test id has no
context), as a language model reading the test split predicts it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

UNKNOWN_ID = 0
UNKNOWN_CHARACTER = "\N{REPLACEMENT CHARACTER}"

__all__ = ["UNKNOWN_ID", "UNKNOWN_CHARACTER", "CharVocabulary", "build_vocabulary", "load_text",
           "EncodedText", "load_encoded_text", "unigram_bits_per_char", "bigram_bits_per_char"]


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """Characters sorted by code point; `characters[k]` has id k + 1, id 0 is the unknown character."""

    characters: tuple[str, ...]

    @property
    def size(self) -> int:
        """V = len(characters) + 1 (the unknown id)."""
        return len(self.characters) + 1

    def encode(self, text: str) -> np.ndarray:
        """int32 ids `[len(text)]`: k + 1 for `characters[k]`, UNKNOWN_ID for any other character."""
        known = _code_points("".join(self.characters))
        points = _code_points(text)
        positions = np.minimum(np.searchsorted(known, points), max(len(known) - 1, 0))
        found = (known[positions] == points) if len(known) else np.zeros(len(points), bool)
        return np.where(found, positions + 1, UNKNOWN_ID).astype(np.int32)

    def decode(self, ids: np.ndarray) -> str:
        """The text of ids `[length]`; UNKNOWN_ID (and any id ≥ V) decodes to UNKNOWN_CHARACTER."""
        table = np.array((UNKNOWN_CHARACTER, *self.characters), dtype=object)
        ids = np.asarray(ids, np.int64).reshape(-1)
        ids = np.where((ids >= 0) & (ids < self.size), ids, UNKNOWN_ID)
        return "".join(table[ids])


def build_vocabulary(text: str) -> CharVocabulary:
    """The vocabulary of the distinct characters of `text`, sorted by code point."""
    return CharVocabulary(tuple(sorted(set(text))))


def load_text(split: str = "train", *, text_file: str = "", data_dir: str | None = None) -> str:
    """The split's characters, read from the prepared array_record dataset (prepared on first use)."""
    from visionax.data.builders.text import SPLITS, VisionaxText, text_config
    from visionax.data.records import read_records
    from visionax.errors import UserError

    if split not in SPLITS:
        raise UserError(f"text has no split {split!r}; use one of {', '.join(SPLITS)}")
    builder = VisionaxText(config=text_config(text_file), data_dir=data_dir)
    records = read_records(builder, split, order_key="index")
    return "".join(bytes(record["text"]).decode("utf-8") for record in records)


@dataclasses.dataclass(frozen=True)
class EncodedText:
    """A text's vocabulary (from the train split) and its splits as int32 ids `[length]`."""

    vocabulary: CharVocabulary
    train: np.ndarray
    test: np.ndarray

    @classmethod
    def from_config(cls, data_config: Any) -> EncodedText:
        """From a config's `data` block: keys text_file ("" for the embedded text) and data_dir."""
        return load_encoded_text(text_file=data_config.get("text_file", "") or "",
                                 data_dir=data_config.get("data_dir", None) or None)


def load_encoded_text(*, text_file: str = "", data_dir: str | None = None) -> EncodedText:
    """Both splits encoded with the train split's character vocabulary."""
    train = load_text("train", text_file=text_file, data_dir=data_dir)
    test = load_text("test", text_file=text_file, data_dir=data_dir)
    vocabulary = build_vocabulary(train)
    return EncodedText(vocabulary, vocabulary.encode(train), vocabulary.encode(test))


def _checked(ids: np.ndarray, vocab_size: int, name: str, minimum: int) -> np.ndarray:
    ids = np.asarray(ids, np.int64).reshape(-1)
    if len(ids) < minimum:
        raise ValueError(f"{name} needs at least {minimum} ids, got {len(ids)}")
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{name} ids must lie in [0, {vocab_size}), got [{ids.min()}, {ids.max()}]")
    return ids


def unigram_bits_per_char(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> float:
    """-mean log2 p(test_i), p(c) = (n(c) + 1) / (N + V) counted on the train ids (add-one)."""
    train = _checked(train_ids, vocab_size, "train_ids", 0)
    test = _checked(test_ids, vocab_size, "test_ids", 1)
    counts = np.bincount(train, minlength=vocab_size).astype(np.float64)
    probabilities = (counts + 1.0) / (len(train) + vocab_size)
    return float(-np.mean(np.log2(probabilities[test])))


def bigram_bits_per_char(train_ids: np.ndarray, test_ids: np.ndarray, vocab_size: int) -> float:
    """-mean_{i≥1} log2 p(test_i | test_{i-1}), p(c | b) = (n(b, c) + 1) / (n(b, ·) + V) counted on
    the train pairs (add-one)."""
    train = _checked(train_ids, vocab_size, "train_ids", 0)
    test = _checked(test_ids, vocab_size, "test_ids", 2)
    pairs = np.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size * vocab_size)
    pairs = pairs.reshape(vocab_size, vocab_size).astype(np.float64)
    probabilities = (pairs + 1.0) / (pairs.sum(axis=1, keepdims=True) + vocab_size)
    return float(-np.mean(np.log2(probabilities[test[:-1], test[1:]])))
