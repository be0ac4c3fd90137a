"""Caption words: tokenizing, a word vocabulary with the specials `<NULL> <START> <END> <UNK>`
(ids 0, 1, 2, 3), fixed-length encoding, and readers for the two caption datasets.

A caption is tokenized by lower-casing it and taking each run of word characters (`\\w+`: letters,
digits, underscore) and each other non-space character (punctuation) as one token: "A dog's ball."
→ ["a", "dog", "'", "s", "ball", "."]. Encoded, it is `<START> w_1 … w_k <END>` padded with `<NULL>`
to `max_length` ids, with k ≤ max_length - 2 (longer captions are cut after max_length - 2 words)
and `<UNK>` for words not in the vocabulary.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import re
from collections.abc import Iterable, Sequence

import numpy as np

SPECIAL_TOKENS = ("<NULL>", "<START>", "<END>", "<UNK>")
NULL, START, END, UNKNOWN = range(4)
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TOKEN_PATTERN = re.compile(r"\w+|[^\w\s]")

__all__ = ["SPECIAL_TOKENS", "NULL", "START", "END", "UNKNOWN", "DIGIT_WORDS", "tokenize",
           "WordVocabulary", "build_word_vocabulary", "digit_vocabulary", "CaptionData",
           "DigitCaptionData", "load_digit_captions", "load_caption_folder"]


def tokenize(caption: str) -> list[str]:
    """The lower-cased words and punctuation marks of `caption`, in order."""
    return TOKEN_PATTERN.findall(caption.lower())


@dataclasses.dataclass(frozen=True)
class WordVocabulary:
    """`words[k]` has id k; the first four are SPECIAL_TOKENS."""

    words: tuple[str, ...]

    def __post_init__(self):
        if self.words[:4] != SPECIAL_TOKENS:
            raise ValueError(f"a word vocabulary starts with {SPECIAL_TOKENS}, got {self.words[:4]}")

    @property
    def size(self) -> int:
        return len(self.words)

    def word_id(self, word: str) -> int:
        """The id of `word`, UNKNOWN when it is not in the vocabulary."""
        return self._ids.get(word, UNKNOWN)

    @functools.cached_property
    def _ids(self) -> dict[str, int]:
        return {word: index for index, word in enumerate(self.words)}

    def encode(self, caption: str | Sequence[str], max_length: int) -> np.ndarray:
        """int32 `[max_length]`: START, the ids of the first max_length - 2 tokens, END, then NULL."""
        tokens = tokenize(caption) if isinstance(caption, str) else list(caption)
        ids = [START, *(self.word_id(token) for token in tokens[:max_length - 2]), END]
        return np.asarray(ids + [NULL] * (max_length - len(ids)), np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """The words between START and the first END (or NULL), joined by spaces."""
        words = []
        for index in ids:
            index = int(index)
            if index == START:
                continue
            if index in (END, NULL):
                break
            words.append(self.words[index] if 0 <= index < self.size else SPECIAL_TOKENS[UNKNOWN])
        return " ".join(words)


def build_word_vocabulary(captions: Iterable[str], min_count: int = 1) -> WordVocabulary:
    """SPECIAL_TOKENS, then the tokens occurring at least `min_count` times in `captions`, most
    frequent first, ties in alphabetical order (tokens equal to a special token are left out)."""
    counts = collections.Counter(token for caption in captions for token in tokenize(caption))
    kept = sorted((word for word, count in counts.items() if count >= min_count and word not in SPECIAL_TOKENS),
                  key=lambda word: (-counts[word], word))
    return WordVocabulary((*SPECIAL_TOKENS, *kept))


def digit_vocabulary() -> WordVocabulary:
    """The fixed vocabulary of digit captions: SPECIAL_TOKENS, then "zero".."nine" (digit d has id 4 + d)."""
    return WordVocabulary((*SPECIAL_TOKENS, *DIGIT_WORDS))


@dataclasses.dataclass(frozen=True)
class CaptionData:
    """A caption folder's split: images uint8 `[images, size, size, 3]` (sorted by file name), every
    caption as int32 `[pairs, max_length]` with `image_index[pair]` its image, and the vocabulary."""

    images: np.ndarray
    captions: np.ndarray
    image_index: np.ndarray
    files: tuple[str, ...]
    vocabulary: WordVocabulary


@dataclasses.dataclass(frozen=True)
class DigitCaptionData:
    """A digit-caption split in index order: images uint8 `[n, height, width, 1]`, captions int32
    `[n, max_length]`, num_digits `[n]`, digits `[n, 4]` (reading order, -1 padded), boxes
    `[n, 4, 4]` (top, left, bottom, right; bottom/right exclusive; 0 padded), sources `[n, 4]`
    (indices into scikit-learn's digits, -1 padded), and the vocabulary."""

    images: np.ndarray
    captions: np.ndarray
    num_digits: np.ndarray
    digits: np.ndarray
    boxes: np.ndarray
    sources: np.ndarray
    vocabulary: WordVocabulary


def load_digit_captions(split: str = "train", *, num_train: int | None = None, num_test: int | None = None,
                        seed: int = 0, data_dir: str | None = None) -> DigitCaptionData:
    """The digit-caption canvases of `split` (the default sizes, or `num_train`/`num_test`)."""
    from visionax.data.builders.digit_captions import (
        VisionaxDigitCaptions,
        digit_captions_config,
    )
    from visionax.data.records import read_records

    _check_split(split)
    builder = VisionaxDigitCaptions(config=digit_captions_config(num_train, num_test, seed), data_dir=data_dir)
    records = read_records(builder, split, order_key="index")
    stack = {key: np.stack([np.asarray(record[key]) for record in records])
             for key in ("image", "caption", "num_digits", "digits", "boxes", "sources")}
    return DigitCaptionData(stack["image"], stack["caption"].astype(np.int32), stack["num_digits"].astype(np.int32),
                            stack["digits"].astype(np.int32), stack["boxes"].astype(np.int32),
                            stack["sources"].astype(np.int32), digit_vocabulary())


def load_caption_folder(folder: str, split: str = "train", *, image_size: int = 64, min_count: int = 1,
                        max_length: int = 17, data_dir: str | None = None) -> CaptionData:
    """A caption folder's split, prepared on first use (with a note for files in images/ without captions)."""
    from visionax.data.builders.caption_folder import (
        VisionaxCaptionFolder,
        caption_folder_config,
    )
    from visionax.data.records import read_records

    _check_split(split)
    builder = VisionaxCaptionFolder(config=caption_folder_config(folder, image_size, min_count, max_length),
                                    data_dir=data_dir)
    unlisted = builder.layout.unlisted
    if unlisted and not builder.is_prepared():  # said once, when the folder is prepared
        print(f"note: {len(unlisted)} files in {builder.layout.root}/{{train,test}}/images are not in "
              f"captions.json and were left out (e.g. {unlisted[0].relative_to(builder.layout.root)})")
    records = read_records(builder, split, order_key="file")
    vocabulary = WordVocabulary(tuple(builder.info.metadata["words"]))
    captions = [np.asarray(record["captions"], np.int32) for record in records]
    return CaptionData(
        images=np.stack([np.asarray(record["image"], np.uint8) for record in records]),
        captions=np.concatenate(captions),
        image_index=np.repeat(np.arange(len(records), dtype=np.int32), [len(group) for group in captions]),
        files=tuple(bytes(record["file"]).decode("utf-8") for record in records),
        vocabulary=vocabulary,
    )


def _check_split(split: str) -> None:
    from visionax.errors import UserError

    if split not in ("train", "test"):
        raise UserError(f"caption datasets have no split {split!r}; use train or test")
