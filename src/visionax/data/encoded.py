"""Images stored encoded (their file's bytes, `data.encoded=True`): decoding to 8-bit RGB, the random
resized crop a pipeline worker takes, and a source that decodes on read.

Decoding is the image folder's conversion (`decode_image`): 16-bit images scaled to 8 bits (x / 257),
palette and grayscale expanded, RGBA's alpha dropped; `resized` then resizes bilinearly to a square,
so an encoded image read whole is exactly the image the raw-pixel storage holds.
"""

from __future__ import annotations

import dataclasses
import io
import math
from typing import Sequence

import numpy as np

SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
ASPECT_RATIOS = (3 / 4, 4 / 3)  # RandomResizedCrop's default range of width / height
WHOLE_IMAGE = (1.0, 1.0)  # crop_area that takes no crop: the whole image, resized

__all__ = ["ASPECT_RATIOS", "WHOLE_IMAGE", "DecodedImages", "DecodedSource", "crop_box", "decode_image", "decoded_whole",
           "resized"]


def decode_image(file) -> "PIL.Image.Image":  # noqa: F821 - Pillow is imported on use
    """The image of `file` (a path, or the file's bytes) as an 8-bit RGB Pillow image."""
    from PIL import Image

    with Image.open(io.BytesIO(file) if isinstance(file, (bytes, bytearray)) else file) as image:
        image.load()
        if image.mode in SIXTEEN_BIT_MODES:
            pixels = np.clip(np.asarray(image, np.float64), 0, 65535) / 257.0
            image = Image.fromarray(np.round(pixels).astype(np.uint8), mode="L")
        return image.convert("RGB")


def resized(image, image_size: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """`[image_size, image_size, 3]` uint8: the region `box` = (top, left, height, width) of the Pillow
    `image` (None: all of it) resized bilinearly."""
    from PIL import Image

    if box is None:
        if image.size == (image_size, image_size):
            return np.asarray(image, dtype=np.uint8)
        return np.asarray(image.resize((image_size, image_size), Image.BILINEAR), dtype=np.uint8)
    top, left, height, width = box
    return np.asarray(image.resize((image_size, image_size), Image.BILINEAR,
                                   box=(left, top, left + width, top + height)), dtype=np.uint8)


def crop_box(height: int, width: int, area: tuple[float, float], rng: np.random.Generator,
             ratios: tuple[float, float] = ASPECT_RATIOS) -> tuple[int, int, int, int]:
    """torchvision's `RandomResizedCrop.get_params`: (top, left, crop height, crop width) of a crop
    whose share of the image's area is uniform in `area` and whose log aspect ratio (w / h) is uniform
    in log(`ratios`); ten tries, then the central crop of the whole image clamped to `ratios`."""
    log_ratios = (math.log(ratios[0]), math.log(ratios[1]))
    for _ in range(10):
        target_area = height * width * rng.uniform(*area)
        aspect_ratio = math.exp(rng.uniform(*log_ratios))
        crop_width = int(round(math.sqrt(target_area * aspect_ratio)))
        crop_height = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < crop_width <= width and 0 < crop_height <= height:
            top = int(rng.integers(0, height - crop_height + 1))
            left = int(rng.integers(0, width - crop_width + 1))
            return top, left, crop_height, crop_width
    image_ratio = width / height
    if image_ratio < min(ratios):
        crop_width, crop_height = width, int(round(width / min(ratios)))
    elif image_ratio > max(ratios):
        crop_width, crop_height = int(round(height * max(ratios))), height
    else:
        crop_width, crop_height = width, height
    return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


@dataclasses.dataclass(frozen=True)
class DecodedSource:
    """The records of `source` (`{"image": uint8 [bytes] the encoded file, "label"}`) decoded on read:
    `{"image": uint8 [image_size, image_size, 3], "label"}`, the whole image resized."""

    source: Sequence[dict]
    image_size: int

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict:
        record = self.source[index]
        return {**record, "image": decoded_whole(record["image"], self.image_size)}


def decoded_whole(stored_image, image_size: int) -> np.ndarray:
    """`[image_size, image_size, 3]` uint8: a stored (encoded) image decoded and resized whole."""
    return resized(decode_image(np.asarray(stored_image).tobytes()), image_size)


@dataclasses.dataclass(frozen=True)
class DecodedImages:
    """The images of `source` (records stored encoded) as a read-only uint8 array `[n, image_size,
    image_size, 3]` decoded when indexed: `images[a:b]` (or an index array) decodes those images only,
    `np.asarray(images)` all of them. Evaluation maps an encoder over it chunk by chunk, so a split
    that does not fit in memory decoded is never held decoded."""

    source: Sequence[dict]
    image_size: int

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.source), self.image_size, self.image_size, 3)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    @property
    def ndim(self) -> int:
        return 4

    def __len__(self) -> int:
        return len(self.source)

    def image(self, index: int) -> np.ndarray:
        """`[image_size, image_size, 3]` uint8: image `index` decoded and resized whole."""
        return decoded_whole(self.source[index]["image"], self.image_size)

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self.image(range(len(self))[index])
        positions = np.arange(len(self))[index]  # a slice, an integer array or a boolean mask
        if positions.ndim != 1:
            raise IndexError(f"DecodedImages takes an integer, a slice or a 1-D index array, not {index!r}")
        if not len(positions):
            return np.zeros((0, *self.shape[1:]), np.uint8)
        return np.stack([self.image(int(position)) for position in positions])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        images = self[:]
        return images if dtype is None else images.astype(dtype)
