"""One English text as a TFDS builder: the Python documentation in `pydoc_data.topics`, or any
UTF-8 file (`data.text_file`), stored as array_record chunks of characters.

The embedded text is `"\\n".join(topics[key] for key in sorted(topics))` (about 465,000 characters
on Python 3.11, 492,000 on 3.12: the standard library's copy differs by version, so the prepared
dataset is named after a hash of the text). A file is decoded as UTF-8 exactly as stored (no newline
translation). The held-out split is the last TEST_FRACTION of the text by characters:
`train = text[:cut]`, `test = text[cut:]` with `cut = len(text) - round(TEST_FRACTION * len(text))`.
Each split is stored as records `{"index": k, "text": split[k * CHUNK : (k + 1) * CHUNK]}` and
assembled in index order on reading.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib
import sys

import numpy as np
import tensorflow_datasets as tfds

from visionax.data.builders.image_folder import source_name
from visionax.errors import UserError

TEST_FRACTION = 0.1
CHUNK_CHARACTERS = 4096
SPLITS = ("train", "test")

__all__ = ["TEST_FRACTION", "CHUNK_CHARACTERS", "embedded_text", "read_text_file", "split_text",
           "TextConfig", "text_config", "VisionaxText"]


def embedded_text() -> str:
    """The standard library's documentation topics, sorted by key and joined with newlines."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def read_text_file(path: str | pathlib.Path) -> str:
    """The characters of a UTF-8 file; a one-line UserError when it is absent, not UTF-8, or too short."""
    path = pathlib.Path(path).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"text file {str(path)!r} does not exist; pass --config.data.text_file=<a UTF-8 "
                        "text file>, or leave data.text_file empty for the embedded Python documentation")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"text file {str(path)!r} is not UTF-8 (byte {error.start}); convert it with "
                        f"`iconv -t UTF-8` or pass another --config.data.text_file") from None
    if round(TEST_FRACTION * len(text)) < 2:
        raise UserError(f"text file {str(path)!r} holds {len(text)} characters, too few for a held-out "
                        f"split of {TEST_FRACTION:.0%} with two characters; pass a longer --config.data.text_file")
    return text


def split_text(text: str) -> dict[str, str]:
    """`{"train": text[:cut], "test": text[cut:]}`, cut = len(text) - round(TEST_FRACTION * len(text))."""
    cut = len(text) - round(TEST_FRACTION * len(text))
    return {"train": text[:cut], "test": text[cut:]}


@dataclasses.dataclass(eq=False)
class TextConfig(tfds.core.BuilderConfig):
    text_file: str = ""


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:10]


def text_config(text_file: str = "") -> TextConfig:
    """A config named after the text's source and a hash of its characters (so a changed file, or
    another Python's documentation, is prepared again, never read stale)."""
    if not text_file:
        text = embedded_text()
        version = f"py{sys.version_info.major}{sys.version_info.minor}"
        return TextConfig(name=f"pydoc_{version}_{_digest(text.encode())}", text_file="",
                          description=f"pydoc_data.topics of Python {sys.version.split()[0]}.")
    path = pathlib.Path(text_file).expanduser().resolve()
    text = read_text_file(path)
    return TextConfig(name=f"{source_name(path)}_{_digest(text.encode())}",
                      text_file=str(path), description=f"The UTF-8 text of {path}.")


class VisionaxText(tfds.core.GeneratorBasedBuilder):
    """A text's train (first 90% of characters) and test (last 10%) splits as records of
    CHUNK_CHARACTERS characters; build it with `VisionaxText(config=text_config(text_file))`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "pydoc_data.topics or a UTF-8 file; last 10% of characters held out."}
    BUILDER_CONFIGS = []

    @functools.cached_property
    def text(self) -> str:
        file = self.builder_config.text_file
        return read_text_file(file) if file else embedded_text()

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {"index": tfds.features.Scalar(dtype=np.int64), "text": tfds.features.Text()}
            ),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(text) for split, text in split_text(self.text).items()}

    def _generate_examples(self, text: str):
        for index, start in enumerate(range(0, len(text), CHUNK_CHARACTERS)):
            yield index, {"index": index, "text": text[start:start + CHUNK_CHARACTERS]}
