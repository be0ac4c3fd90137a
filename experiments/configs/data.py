"""The `data` block every experiment config shares. Not an experiment config itself."""

import ml_collections


def digits() -> ml_collections.ConfigDict:
    """The embedded digits. `--config.data.name=image_folder --config.data.folder=<dir>` reads
    `<dir>/{train,test}/<class>/<image>` resized to `image_size`; a TFDS catalog name also works."""
    return ml_collections.ConfigDict({"name": "digits", "folder": "", "image_size": 32, "data_dir": ""})
