"""Any image folder laid out as `root/{train,test}/<class>/<image>` as a TFDS builder.

Images are decoded with Pillow, converted to RGB, resized to `image_size`×`image_size` (bilinear) and
stored as uint8 tensors in array_record, so preparing and reading need no TensorFlow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from visionax.errors import UserError

SPLITS = ("train", "test")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}


def class_names(root: pathlib.Path) -> list[str]:
    """The sorted class folder names of `root/train`; a UserError when the layout is wrong."""
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
    names = sorted(entry.name for entry in (root / "train").iterdir() if entry.is_dir())
    if not names:
        raise UserError(f"data folder {str(root / 'train')!r} has no class subfolders; add <class>/<image> folders")
    return names


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    folder: str = ""
    image_size: int = 32


def folder_config(folder: str, image_size: int) -> ImageFolderConfig:
    """A builder config named after the folder's name, a hash of its absolute path, and the size."""
    root = pathlib.Path(folder).expanduser().resolve()
    digest = hashlib.sha1(str(root).encode()).hexdigest()[:8]
    slug = "".join(character if character.isalnum() else "_" for character in root.name.lower())
    return ImageFolderConfig(
        name=f"{slug}_{digest}_{image_size}px", folder=str(root), image_size=image_size,
        description=f"Images of {root} resized to {image_size}×{image_size}.",
    )


def load_image(path: pathlib.Path, image_size: int) -> np.ndarray:
    """`[image_size, image_size, 3]` uint8 RGB."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


class VisionaxImageFolder(tfds.core.GeneratorBasedBuilder):
    """An image-folder dataset; build it with `VisionaxImageFolder(config=folder_config(...))`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Pillow-decoded images resized to the config's size, uint8 tensors."}
    BUILDER_CONFIGS = []

    def _info(self) -> tfds.core.DatasetInfo:
        size = self.builder_config.image_size
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(names=class_names(pathlib.Path(self.builder_config.folder))),
                }
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        root = pathlib.Path(self.builder_config.folder)
        names = class_names(root)
        return {split: self._generate_examples(root / split, names) for split in SPLITS}

    def _generate_examples(self, split_root: pathlib.Path, names: list[str]):
        size = self.builder_config.image_size
        for label, name in enumerate(names):
            class_root = split_root / name
            if not class_root.is_dir():
                continue
            for path in sorted(class_root.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    yield f"{name}/{path.name}", {"image": load_image(path, size), "label": label}
