"""The `data` block every experiment config holds. Not an experiment config itself."""

import ml_collections


def digits() -> ml_collections.ConfigDict:
    """The embedded digits. `--config.data.folder=<dir>` reads the image folder
    `<dir>/{train,test}/<class>/<image>` instead, resized to `image_size` (`skip_bad_images`: leave
    out the files Pillow cannot decode instead of stopping); `--config.data.name=<name>` a TFDS
    catalog dataset where it can be prepared. `classes` ("5,6,7,8,9"; "" all) keeps some classes of
    both splits, relabelled 0..k−1; `label_fraction` keeps that share of each class of the training
    examples; a training split of at most `in_memory_mb` megabytes is held in memory (0: read record
    by record) (`visionax.train.setup`), and with `on_device` placed on the devices once, each batch
    gathered inside the step (`visionax.train.feed`). An image folder with `encoded=True` is stored as
    its files' bytes and decoded by `workers` grain processes (`prefetch` batches ahead each), which take
    a random resized crop of `crop_area` ((1, 1): none) (`visionax.data.streaming`)."""
    return ml_collections.ConfigDict(
        {"name": "digits", "folder": "", "image_size": 32, "data_dir": "", "skip_bad_images": False,
         "classes": "", "label_fraction": 1.0, "in_memory_mb": 4000.0,
         "on_device": False, "encoded": False, "crop_area": (1.0, 1.0), "workers": 2, "prefetch": 2})


def image_folder(folder: str = "", image_size: int = 32) -> ml_collections.ConfigDict:
    """An image folder `<folder>/{train,test}/<class>/<image>` resized to `image_size`."""
    return ml_collections.ConfigDict(
        {"name": "image_folder", "folder": folder, "image_size": image_size, "data_dir": "", "skip_bad_images": False,
         "classes": "", "label_fraction": 1.0, "in_memory_mb": 4000.0,
         "on_device": False, "encoded": False, "crop_area": (1.0, 1.0), "workers": 2, "prefetch": 2})
