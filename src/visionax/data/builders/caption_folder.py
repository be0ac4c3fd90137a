"""A caption folder laid out as `root/{train,test}/images/<image>` with `root/{train,test}/captions.json`
(an object mapping each image's file name, relative to images/, to a list of its captions: the
Flickr8k/COCO layout) as a TFDS builder.

One example per image, holding all its captions: `{"file", "image" uint8 [size, size, 3],
"captions" int32 [captions, max_length]}` (a reader expands them into (image, caption) pairs without
storing an image twice). Images are decoded and resized as the image-folder builder does
(`image_folder.load_image`: 8-bit RGB, bilinear). The word vocabulary is built on the train captions
only (`captions.build_word_vocabulary(min_count)`: specials `<NULL> <START> <END> <UNK>` = 0..3, then
words of count ≥ min_count, most frequent first, ties alphabetical) and stored in the dataset's
metadata. A missing folder, images/ folder or captions.json, a malformed captions.json, an image
with no captions, or one listed but absent are one-line UserErrors naming the path and the fix;
files in images/ that captions.json does not list are left out (`layout.unlisted`). The prepared
dataset is named after the folder, a hash of its path, and a fingerprint of its content, so a changed
folder is prepared again.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from visionax.data.builders.image_folder import load_image, source_name
from visionax.data.captions import build_word_vocabulary
from visionax.errors import UserError

SPLITS = ("train", "test")
CAPTIONS_FILE = "captions.json"

__all__ = ["CaptionLayout", "scan_captions", "CaptionFolderConfig", "caption_folder_config",
           "VisionaxCaptionFolder"]


@dataclasses.dataclass(frozen=True)
class CaptionLayout:
    """A caption folder's images of each split as `(file name, path, captions)`, sorted by file name,
    and the files in images/ that captions.json does not list."""

    root: pathlib.Path
    images: dict[str, tuple[tuple[str, pathlib.Path, tuple[str, ...]], ...]]
    unlisted: tuple[pathlib.Path, ...]

    def fingerprint(self) -> str:
        """A hash of each captions.json's bytes and each image's name, size and modification time."""
        digest = hashlib.sha1()
        for split in SPLITS:
            digest.update((self.root / split / CAPTIONS_FILE).read_bytes())
            for name, path, _ in self.images[split]:
                stat = path.stat()
                digest.update(f"{split}|{name}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()[:10]


def _read_captions(file: pathlib.Path) -> dict[str, tuple[str, ...]]:
    fix = f"write {file} as a JSON object mapping each image file name to a list of caption strings"
    if not file.is_file():
        raise UserError(f"caption file {str(file)!r} does not exist; {fix}")
    try:
        listing = json.loads(file.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"caption file {str(file)!r} is not UTF-8 JSON ({' '.join(str(error).split())}); {fix}") from None
    if not isinstance(listing, dict):
        raise UserError(f"caption file {str(file)!r} holds a JSON {type(listing).__name__}, not an object; {fix}")
    for name, entries in listing.items():
        if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
            raise UserError(f"caption file {str(file)!r} maps {name!r} to {json.dumps(entries)[:40]}, not a list "
                            f"of strings; {fix}")
        if not entries:
            raise UserError(f"caption file {str(file)!r} lists no captions for {name!r}; add one or remove the entry")
    if not listing:
        raise UserError(f"caption file {str(file)!r} lists no images; {fix}")
    return {name: tuple(entries) for name, entries in listing.items()}


def scan_captions(root: str | pathlib.Path) -> CaptionLayout:
    """The layout of `root/{train,test}/{images/,captions.json}`; a one-line UserError naming what is wrong."""
    root = pathlib.Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(f"caption folder {str(root)!r} does not exist; pass --config.data.folder=<dir> with "
                        "<dir>/{train,test}/images/<image> and <dir>/{train,test}/captions.json")
    images, unlisted = {}, []
    for split in SPLITS:
        folder = root / split / "images"
        if not folder.is_dir():
            raise UserError(f"caption folder {str(root)!r} has no {split}/images/ subfolder; put the {split} "
                            f"images in {folder} and their captions in {root / split / CAPTIONS_FILE}")
        listing = _read_captions(root / split / CAPTIONS_FILE)
        for name in sorted(listing):
            if not (folder / name).is_file():
                raise UserError(f"image {str(folder / name)!r} is listed in {str(root / split / CAPTIONS_FILE)!r} "
                                "but absent; add the image or remove its entry")
        images[split] = tuple((name, folder / name, listing[name]) for name in sorted(listing))
        listed = {(folder / name).resolve() for name in listing}
        unlisted += sorted(path for path in folder.rglob("*") if path.is_file() and path.resolve() not in listed)
    return CaptionLayout(root, images, tuple(unlisted))


@dataclasses.dataclass(eq=False)
class CaptionFolderConfig(tfds.core.BuilderConfig):
    folder: str = ""
    image_size: int = 64
    min_count: int = 1
    max_length: int = 17


def caption_folder_config(folder: str, image_size: int = 64, min_count: int = 1,
                          max_length: int = 17) -> CaptionFolderConfig:
    """A config named after the folder, a hash of its path, its content fingerprint and the options."""
    if max_length < 3 or min_count < 1 or image_size < 1:
        raise UserError(f"caption folder options need max_length ≥ 3, min_count ≥ 1, image_size ≥ 1 (got "
                        f"{max_length}, {min_count}, {image_size}); fix --config.data.max_length/min_count/image_size")
    layout = scan_captions(folder)
    return CaptionFolderConfig(
        name=f"{source_name(layout.root)}_{layout.fingerprint()}_{image_size}px_min{min_count}_len{max_length}",
        folder=str(layout.root), image_size=image_size, min_count=min_count, max_length=max_length,
        description=f"Captioned images of {layout.root} resized to {image_size}×{image_size}.",
    )


class VisionaxCaptionFolder(tfds.core.GeneratorBasedBuilder):
    """A captioned-image folder; build it with `VisionaxCaptionFolder(config=caption_folder_config(...))`;
    the vocabulary's words are `info.metadata["words"]`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "One example per image with all its captions; vocabulary from train captions."}
    BUILDER_CONFIGS = []

    @functools.cached_property
    def layout(self) -> CaptionLayout:
        return scan_captions(self.builder_config.folder)

    @functools.cached_property
    def vocabulary(self):
        captions = [caption for _, _, entries in self.layout.images["train"] for caption in entries]
        return build_word_vocabulary(captions, self.builder_config.min_count)

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "file": tfds.features.Text(),
                    "image": tfds.features.Tensor(shape=(config.image_size, config.image_size, 3), dtype=np.uint8),
                    "captions": tfds.features.Tensor(shape=(None, config.max_length), dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        self.info.metadata["words"] = list(self.vocabulary.words)
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        config = self.builder_config
        for name, path, entries in self.layout.images[split]:
            try:
                image = load_image(path, config.image_size)
            except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for bad files
                raise UserError(f"image {str(path)!r} cannot be decoded ({type(error).__name__}: "
                                f"{' '.join(str(error).split())}); remove or replace it and its captions.json "
                                "entry") from None
            captions = np.stack([self.vocabulary.encode(entry, config.max_length) for entry in entries])
            yield name, {"file": name, "image": image, "captions": captions}
