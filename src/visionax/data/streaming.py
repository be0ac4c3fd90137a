"""Training batches of a split stored encoded (`data.encoded=True`), decoded by grain worker processes.

For data that does not fit in memory (ImageNet-size folders, stored at their JPEG size): the batches
are `Batches`' batches — batch `s` is the same function of `(seed, s)`, each host reads only its share,
and a resumed run reads exactly the batches an uninterrupted one would — but their images are decoded,
randomly cropped and resized in `data.workers` grain worker processes (`MapDataset` over the step
numbers → `mp_prefetch`), each keeping `data.prefetch` batches ready ahead of the training step. The
pipeline's position is the step itself: resuming from a checkpoint of step `s` starts the pipeline at
batch `s`, so the checkpoint's step is the whole iterator state.

The crop (`data.crop_area`, torchvision's RandomResizedCrop with aspect ratios 3/4 … 4/3) is drawn
from `(seed, step, example index)`: the same on every host count, worker count and resume.
`crop_area=(1, 1)` takes no crop: the whole image resized, exactly the raw-pixel storage's image.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from absl import flags

from visionax.data.encoded import WHOLE_IMAGE, crop_box, decode_image, resized
from visionax.data.pipeline import Batches
from visionax.errors import UserError

CROP_STREAM = 1  # the rng stream of the crops: [seed, CROP_STREAM, step, index] (permutations use [seed, epoch])
LAST_STEP = 2**62  # the pipeline's steps run from the first one asked for to here (it is lazy)

__all__ = ["StreamedBatches", "DecodeBatch"]


@dataclasses.dataclass(frozen=True)
class DecodeBatch:
    """What a worker does for step `s`: this host's share of batch `s` of `batches` (records stored
    encoded) decoded, cropped and resized: `{"image": uint8 [b, image_size, image_size, 3], "label": int32 [b]}`."""

    batches: Batches
    image_size: int
    crop_area: tuple[float, float] = WHOLE_IMAGE

    def crop(self, image, step: int, index: int) -> tuple[int, int, int, int] | None:
        """The crop box of example `index` at step `step` (None: the whole image)."""
        if tuple(self.crop_area) == WHOLE_IMAGE:
            return None
        rng = np.random.default_rng([self.batches.seed, CROP_STREAM, step, index])
        return crop_box(image.height, image.width, tuple(self.crop_area), rng)

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        images, labels = [], []
        for index in self.batches.indices(step).tolist():
            record = self.batches.source[index]
            image = decode_image(np.asarray(record["image"]).tobytes())
            images.append(resized(image, self.image_size, self.crop(image, step, index)))
            labels.append(record["label"])
        return {"image": np.stack(images), "label": np.asarray(labels, np.int32)}


@dataclasses.dataclass(frozen=True)
class StreamedBatches(Batches):
    """`Batches` whose `host_batch(step)` comes from grain workers decoding the encoded records of
    `source`; steps asked for in order are read ahead, a jump (a resume) restarts the pipeline there."""

    image_size: int = 32
    crop_area: tuple[float, float] = WHOLE_IMAGE
    workers: int = 2  # worker processes (0: decode in this process)
    prefetch: int = 2  # batches each worker keeps ready
    stream: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)  # {"next": step, "iterator"}

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.crop_area[0] <= self.crop_area[1] <= 1.0:
            raise UserError(f"data.crop_area={tuple(self.crop_area)} must be (low, high) with 0 < low <= high <= 1 "
                            "(the share of the image a crop covers); pass e.g. --config.data.crop_area='(0.08, 1.0)'")

    @property
    def decode_batch(self) -> DecodeBatch:
        plain = Batches(self.source, self.batch_size, self.seed, self.process_index, self.process_count)
        return DecodeBatch(plain, self.image_size, tuple(self.crop_area))

    def dataset(self, start: int) -> grain.IterDataset:
        """The batches from step `start` on: decoded in `workers` processes, `prefetch` ahead each."""
        steps = grain.MapDataset.range(start, LAST_STEP).map(self.decode_batch).to_iter_dataset()
        if not self.workers:
            return steps
        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; visionax's CLI parses its own
            flags.FLAGS.mark_as_parsed()  # so grain's keep their defaults
        return steps.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.workers,
                                                              per_worker_buffer_size=self.prefetch))

    def host_batch(self, step: int) -> dict[str, np.ndarray]:
        if self.stream.get("next") != step:
            self.close()
            self.stream.update(iterator=iter(self.dataset(step)))
        self.stream["next"] = step + 1
        return next(self.stream["iterator"])

    def close(self) -> None:
        """Stop the workers (a later `host_batch` starts them again)."""
        iterator = self.stream.pop("iterator", None)
        self.stream.pop("next", None)
        if iterator is not None:
            iterator.close()
