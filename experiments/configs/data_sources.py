"""The `data` block every experiment config holds. Not an experiment config itself."""

import ml_collections


def digits() -> ml_collections.ConfigDict:
    """The embedded digits. `--config.data.folder=<dir>` reads the image folder
    `<dir>/{train,test}/<class>/<image>` instead, resized to `image_size` (`skip_bad_images`: leave
    out the files Pillow cannot decode instead of stopping); `--config.data.name=<name>` a TFDS
    catalog dataset where it can be prepared."""
    return ml_collections.ConfigDict(
        {"name": "digits", "folder": "", "image_size": 32, "data_dir": "", "skip_bad_images": False})


def image_folder(folder: str = "", image_size: int = 32) -> ml_collections.ConfigDict:
    """An image folder `<folder>/{train,test}/<class>/<image>` resized to `image_size`."""
    return ml_collections.ConfigDict(
        {"name": "image_folder", "folder": folder, "image_size": image_size, "data_dir": "", "skip_bad_images": False})
