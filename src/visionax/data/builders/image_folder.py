"""Any image folder laid out as `root/{train,test}/<class>/<image>` as a TFDS builder.

Images are decoded with Pillow and converted to 8-bit RGB (grayscale, palette, RGBA and 16-bit
images included), resized to `image_size`×`image_size` (bilinear) and stored as uint8 tensors in
array_record, so preparing and reading need no TensorFlow; or, with `encoded`, stored as their files'
bytes (a JPEG folder at its JPEG size) and decoded when read (`visionax.data.encoded`). What a real folder holds beside images
gets one line each: files that are not images are counted and ignored; an image that cannot be
decoded is a one-line error naming it (or, with `skip_bad_images`, skipped and counted); a class
present only in test/, an empty split or a folder without class folders are one-line errors. The
prepared dataset is named after the folder's path and a fingerprint of its files (names, sizes,
modification times), so a folder whose content changed is prepared again, never read stale.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from visionax.data.encoded import decode_image, resized
from visionax.errors import UserError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

__all__ = ["FolderLayout", "scan", "class_names", "ImageFolderConfig", "folder_config", "load_image",
           "VisionaxImageFolder"]


@dataclasses.dataclass(frozen=True)
class FolderLayout:
    """What an image folder holds: its class names (from train/), the image files of each split
    as `(path, label)`, and the files that are not images."""

    root: pathlib.Path
    classes: tuple[str, ...]
    images: dict[str, tuple[tuple[pathlib.Path, int], ...]]
    ignored: tuple[pathlib.Path, ...]

    def fingerprint(self) -> str:
        """A hash of every image's relative path, size and modification time."""
        digest = hashlib.sha1()
        for split in SPLITS:
            for path, label in self.images[split]:
                stat = path.stat()
                digest.update(f"{path.relative_to(self.root)}|{stat.st_size}|{stat.st_mtime_ns}|{label}\n".encode())
        return digest.hexdigest()[:10]


def _split_files(split_root: pathlib.Path) -> dict[str, list[pathlib.Path]]:
    return {entry.name: sorted(path for path in entry.rglob("*") if path.is_file())
            for entry in sorted(split_root.iterdir()) if entry.is_dir()}


def scan(root: str | pathlib.Path) -> FolderLayout:
    """The layout of `root/{train,test}/<class>/<image>`; a UserError naming what is wrong."""
    root = pathlib.Path(root).expanduser().resolve()
    if not root.is_dir():
        raise UserError(
            f"data folder {str(root)!r} does not exist; pass --config.data.folder=<dir> with "
            "<dir>/train/<class>/<image> and <dir>/test/<class>/<image>"
        )
    for split in SPLITS:
        if not (root / split).is_dir():
            raise UserError(
                f"data folder {str(root)!r} has no {split}/ subfolder; lay images out as "
                f"{root}/{{train,test}}/<class>/<image>"
            )
    files = {split: _split_files(root / split) for split in SPLITS}
    classes = tuple(files["train"])
    if not classes:
        raise UserError(f"data folder {str(root / 'train')!r} has no class subfolders; add <class>/<image> folders")
    only_in_test = sorted(set(files["test"]) - set(classes))
    if only_in_test:
        raise UserError(f"class folder {only_in_test[0]!r} is in {root / 'test'} but not in {root / 'train'}; "
                        "add its training images or remove it from test/")
    images, ignored = {}, []
    for split in SPLITS:
        images[split] = tuple((path, label) for label, name in enumerate(classes)
                              for path in files[split].get(name, []) if path.suffix.lower() in IMAGE_SUFFIXES)
        ignored += [path for paths in files[split].values() for path in paths if path.suffix.lower() not in IMAGE_SUFFIXES]
        if not images[split]:
            raise UserError(f"the {split}/ split of data folder {str(root)!r} holds no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))}); add some under {root / split}/<class>/")
    return FolderLayout(root, classes, images, tuple(ignored))


def class_names(root: pathlib.Path) -> list[str]:
    """The sorted class folder names of `root/train`; a UserError when the layout is wrong."""
    return list(scan(root).classes)


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    folder: str = ""
    image_size: int = 32
    skip_bad_images: bool = False
    encoded: bool = False  # store each image's file bytes (decoded when read) instead of resized pixels


def source_name(path: pathlib.Path) -> str:
    """A dataset-config name for a folder or file: its lower-cased name with non-alphanumerics as
    "_", then 8 hex digits of the SHA-1 of its absolute path (two folders of one name differ)."""
    slug = "".join(character if character.isalnum() else "_" for character in path.name.lower())
    return f"{slug}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def folder_config(folder: str, image_size: int, skip_bad_images: bool = False, encoded: bool = False
                  ) -> ImageFolderConfig:
    """A builder config named after the folder's name, a hash of its absolute path, the size (or
    "encoded"), and the fingerprint of its content (so a changed folder is prepared again)."""
    layout = scan(folder)
    skip = "_skipbad" if skip_bad_images else ""
    stored = "encoded" if encoded else f"{image_size}px"
    return ImageFolderConfig(
        name=f"{source_name(layout.root)}_{layout.fingerprint()}_{stored}{skip}", folder=str(layout.root),
        image_size=image_size, skip_bad_images=skip_bad_images, encoded=encoded,
        description=(f"Images of {layout.root} as their files' bytes." if encoded else
                     f"Images of {layout.root} resized to {image_size}×{image_size}."),
    )


def load_image(path: pathlib.Path, image_size: int) -> np.ndarray:
    """`[image_size, image_size, 3]` uint8 RGB: 16-bit images scaled to 8 bits (x / 257), palette
    and grayscale images expanded, RGBA's alpha dropped, resized bilinearly."""
    return resized(decode_image(path), image_size)


class VisionaxImageFolder(tfds.core.GeneratorBasedBuilder):
    """An image-folder dataset; build it with `VisionaxImageFolder(config=folder_config(...))`.
    After `download_and_prepare`, `skipped` lists the images that could not be decoded (with
    `skip_bad_images`) and `ignored` the files that are not images."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Pillow-decoded images resized to the config's size, uint8 tensors.",
        "1.1.0": "16-bit images scaled to 8 bits; unreadable images named or skipped; content fingerprint.",
    }
    BUILDER_CONFIGS = []

    def __init__(self, *args, **kwargs):
        self.skipped: list[pathlib.Path] = []
        super().__init__(*args, **kwargs)

    @functools.cached_property
    def layout(self) -> FolderLayout:
        return scan(self.builder_config.folder)

    @property
    def ignored(self) -> tuple[pathlib.Path, ...]:
        return self.layout.ignored

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        image = (tfds.features.Tensor(shape=(None,), dtype=np.uint8, encoding=tfds.features.Encoding.BYTES)
                 if self.builder_config.encoded else tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8))
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": image,
                    "label": tfds.features.ClassLabel(names=list(self.layout.classes)),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        size = self.builder_config.image_size
        for path, label in self.layout.images[split]:
            try:
                image = load_image(path, size)  # decoded whether stored or not: a bad file is found here
                if self.builder_config.encoded:
                    image = np.frombuffer(path.read_bytes(), np.uint8)
            except (OSError, ValueError, SyntaxError) as error:  # Pillow's errors for bad files
                if not self.builder_config.skip_bad_images:
                    raise UserError(f"image {str(path)!r} cannot be decoded ({type(error).__name__}: "
                                    f"{' '.join(str(error).split())}); remove or replace it, or pass "
                                    "--config.data.skip_bad_images=True to skip such files") from None
                self.skipped.append(path)
                continue
            yield str(path.relative_to(self.layout.root)), {"image": image, "label": label}
