"""Datasets by name, prepared once to array_record and read with `tfds.data_source` (no TensorFlow).

Names: "digits" (embedded, the default), "image_folder" (any `root/{train,test}/<class>/<image>`
folder, `data.folder`, resized to `data.image_size`), or any TFDS catalog name (e.g. "cifar10") where
it can be prepared: offline, or without the `.[tf]` extra that some catalog builders need, that fails
with one line naming the image-folder option.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds

from visionax.data.builders.digits import VisionaxDigits
from visionax.data.builders.image_folder import VisionaxImageFolder, folder_config
from visionax.data.encoded import DecodedSource
from visionax.data.records import prepared
from visionax.errors import UserError

EMBEDDED_NAMES = ("digits", "image_folder")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Which dataset to read: `name`, plus `folder`, `image_size`, `skip_bad_images` and `encoded`
    (store the files' bytes, decode on read) for "image_folder"."""

    name: str = "digits"
    folder: str = ""
    image_size: int = 32
    data_dir: str | None = None
    skip_bad_images: bool = False
    encoded: bool = False

    @classmethod
    def from_config(cls, data_config: Any) -> "DatasetSpec":
        """From a config's `data` block (keys name, folder, image_size, data_dir, skip_bad_images, encoded).
        A folder given with the default name "digits" selects the image folder: the folder is
        what the user asked for."""
        name, folder = data_config.get("name", "digits"), data_config.get("folder", "") or ""
        if folder and name == "digits":
            name = "image_folder"
        elif folder and name != "image_folder":
            raise UserError(f"data.folder={folder!r} is read only with data.name=image_folder, not {name!r}; "
                            "drop --config.data.folder or pass --config.data.name=image_folder")
        encoded = bool(data_config.get("encoded", False))
        if encoded and name != "image_folder":
            raise UserError(f"data.encoded=True stores an image folder's files as they are; dataset {name!r} is "
                            "not one: drop --config.data.encoded or pass --config.data.folder=<dir>")
        return cls(
            name=name,
            folder=folder,
            image_size=int(data_config.get("image_size", 32)),
            data_dir=data_config.get("data_dir", None) or None,
            skip_bad_images=bool(data_config.get("skip_bad_images", False)),
            encoded=encoded,
        )


def _catalog_builder(spec: DatasetSpec) -> tfds.core.DatasetBuilder:
    try:
        return tfds.builder(spec.name, data_dir=spec.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(
            f"unknown dataset {spec.name!r}; use --config.data.name=digits, or image_folder with "
            "--config.data.folder=<dir>, or a TFDS catalog name such as cifar10"
        ) from None


def tensorflow_available() -> bool:
    """Whether TensorFlow (the `.[tf]` extra that catalog builders need to prepare) is installed."""
    return importlib.util.find_spec("tensorflow") is not None


def prepared_builder(spec: DatasetSpec) -> tfds.core.DatasetBuilder:
    """The TFDS builder for `spec`, prepared to array_record if it was not already."""
    if spec.name == "digits":
        builder = VisionaxDigits(data_dir=spec.data_dir)
    elif spec.name == "image_folder":
        if not spec.folder:
            raise UserError("data.name=image_folder needs a folder; pass --config.data.folder=<dir>")
        builder = VisionaxImageFolder(
            config=folder_config(spec.folder, spec.image_size, spec.skip_bad_images, spec.encoded), data_dir=spec.data_dir)
    else:
        builder = _catalog_builder(spec)
    if builder.is_prepared():
        return builder
    if spec.name not in EMBEDDED_NAMES and not tensorflow_available():
        raise UserError(
            f"preparing TFDS catalog dataset {spec.name!r} needs TensorFlow and a network: "
            "pip install -e '.[tf]', or lay the images out as <dir>/{train,test}/<class>/<image> and pass "
            "--config.data.name=image_folder --config.data.folder=<dir>"
        )
    try:
        prepared(builder)
        if spec.name == "image_folder":
            _report_folder(builder)
    except UserError:
        raise
    except ImportError as error:
        raise UserError(
            f"preparing TFDS dataset {spec.name!r} needs TensorFlow ({error}); "
            "pip install -e '.[tf]', or use --config.data.name=image_folder --config.data.folder=<dir>"
        ) from None
    except Exception as error:  # noqa: BLE001 — offline downloads fail in many ways
        raise UserError(
            f"could not prepare TFDS dataset {spec.name!r} ({type(error).__name__}, offline?); lay the "
            "images out as <dir>/{train,test}/<class>/<image> and pass --config.data.name=image_folder "
            "--config.data.folder=<dir>"
        ) from None
    return builder


def _report_folder(builder: VisionaxImageFolder) -> None:
    """One line each for what preparing an image folder left out."""
    layout = builder.layout
    for what, paths in (("files that are not images", builder.ignored),
                        ("images that cannot be decoded (skip_bad_images)", builder.skipped)):
        if paths:
            print(f"note: {len(paths)} {what} in {layout.root} were left out "
                  f"(e.g. {paths[0].relative_to(layout.root)})")
    without_test = [name for label, name in enumerate(layout.classes)
                    if not any(image_label == label for _, image_label in layout.images["test"])]
    if without_test:
        print(f"note: class {', '.join(without_test)} of {layout.root} has no test images")


def data_source(spec: DatasetSpec, split: str) -> Sequence[dict]:
    """A random-access source of `{"image": uint8 [h, w, c], "label": int}` records for `split`
    (decoded on read where the images are stored encoded)."""
    return decoded(spec, stored_source(spec, split))


def decoded(spec: DatasetSpec, source: Sequence[dict]) -> Sequence[dict]:
    """`source`, records as `stored_source` gives them, with its images decoded where they are stored
    encoded (`DecodedSource`)."""
    return DecodedSource(source, spec.image_size) if spec.encoded else source


def stored_source(spec: DatasetSpec, split: str) -> Sequence[dict]:
    """The records of `split` as stored: `{"image": uint8 [bytes] the file, "label"}` with
    `spec.encoded`, else as `data_source`."""
    builder = prepared_builder(spec)
    if builder.info.splits and split not in builder.info.splits:
        raise UserError(f"dataset {spec.name!r} has no split {split!r}; use one of {', '.join(builder.info.splits)}")
    if spec.name == "image_folder":
        return builder.as_data_source(split=split)
    return tfds.data_source(builder.name, split=split, data_dir=builder.data_dir_root, download=False)


def num_classes(spec: DatasetSpec) -> int:
    """The number of classes of the dataset's "label" feature."""
    return prepared_builder(spec).info.features["label"].num_classes


def as_arrays(source: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
    """All records of a source as `(images uint8 [n, h, w, c], labels int32 [n])`."""
    records = [source[index] for index in range(len(source))]
    images = np.stack([np.asarray(record["image"], np.uint8) for record in records])
    if images.ndim == 3:
        images = images[..., None]
    labels = np.asarray([record["label"] for record in records], np.int32)
    return images, labels


def load_arrays(
    name: str = "digits",
    split: str = "train",
    *,
    folder: str = "",
    image_size: int = 32,
    data_dir: str | None = None,
    skip_bad_images: bool = False,
    encoded: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The whole split in memory: `(images uint8 [n, h, w, c], labels int32 [n])`."""
    spec = DatasetSpec(name=name, folder=folder, image_size=image_size, data_dir=data_dir,
                       skip_bad_images=skip_bad_images, encoded=encoded)
    return as_arrays(data_source(spec, split))
