"""Canvases of 1–4 embedded 8×8 digits captioned with their names, as a TFDS builder (no download).

Each canvas is CANVAS_HEIGHT×CANVAS_WIDTH (24×48) grey uint8, zero outside the digits. A canvas holds
n ~ uniform{1..4} distinct digits of one split of scikit-learn's digits (the digits builder's fixed
stratified split: test canvases use only test digits), pasted unchanged at non-overlapping positions
whose column ranges are disjoint: with slack S = 48 - 8n, the left edges are x_k = g_k + 8k for
g = sorted(n uniform draws from 0..S), and the tops y_k ~ uniform{0..16}. The caption names the digits
in reading order, left to right by left edge x (the column ranges are disjoint, so no two digits share
an x; the sort key is (x, y), so a tie, which cannot occur, would put the upper digit first):
`<START> three one four <END>` padded with `<NULL>` to MAX_LENGTH = 6 ids, vocabulary
`visionax.data.captions.digit_vocabulary()`. Canvas k of a split is drawn by
`numpy.random.default_rng([seed, split number, k])`, so it depends on (seed, split, k) alone.
Each record also stores the digits, their boxes (top, left, bottom, right; exclusive) and their
source indices into `load_digits()` in caption order, padded (digits, sources -1; boxes 0).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow_datasets as tfds

from visionax.data.builders.digits import source_digits, split_indices
from visionax.data.captions import END, NULL, START, digit_vocabulary

CANVAS_HEIGHT, CANVAS_WIDTH = 24, 48
DIGIT_SIZE = 8
MAX_DIGITS = 4
MAX_LENGTH = MAX_DIGITS + 2
FIRST_DIGIT_ID = 4
NUM_TRAIN, NUM_TEST = 10_000, 2_000
SPLIT_NUMBERS = {"train": 0, "test": 1}

__all__ = ["CANVAS_HEIGHT", "CANVAS_WIDTH", "MAX_DIGITS", "MAX_LENGTH", "compose_canvas",
           "DigitCaptionsConfig", "digit_captions_config", "VisionaxDigitCaptions"]


def compose_canvas(generator: np.random.Generator, images: np.ndarray, labels: np.ndarray,
                   pool: np.ndarray) -> dict[str, np.ndarray]:
    """One record: n distinct digits from `pool` (indices into `images [m, 8, 8]`) pasted left to right."""
    count = int(generator.integers(1, MAX_DIGITS + 1))
    sources = generator.choice(pool, size=count, replace=False)
    slack = CANVAS_WIDTH - DIGIT_SIZE * count
    lefts = np.sort(generator.integers(0, slack + 1, size=count)) + DIGIT_SIZE * np.arange(count)
    tops = generator.integers(0, CANVAS_HEIGHT - DIGIT_SIZE + 1, size=count)
    canvas = np.zeros((CANVAS_HEIGHT, CANVAS_WIDTH, 1), np.uint8)
    boxes = np.zeros((MAX_DIGITS, 4), np.int32)
    for slot, (source, top, left) in enumerate(zip(sources, tops, lefts)):
        canvas[top:top + DIGIT_SIZE, left:left + DIGIT_SIZE, 0] = images[source]
        boxes[slot] = (top, left, top + DIGIT_SIZE, left + DIGIT_SIZE)
    order = sorted(range(count), key=lambda slot: (lefts[slot], tops[slot]))  # reading order
    boxes[:count] = boxes[order]
    sources = sources[order]
    digits = np.full(MAX_DIGITS, -1, np.int32)
    digits[:count] = labels[sources]
    caption = np.full(MAX_LENGTH, NULL, np.int32)
    caption[: count + 2] = [START, *(FIRST_DIGIT_ID + digits[:count]), END]
    padded_sources = np.full(MAX_DIGITS, -1, np.int32)
    padded_sources[:count] = sources
    return {"image": canvas, "caption": caption, "num_digits": np.int32(count), "digits": digits,
            "boxes": boxes, "sources": padded_sources}


@dataclasses.dataclass(eq=False)
class DigitCaptionsConfig(tfds.core.BuilderConfig):
    num_train: int = NUM_TRAIN
    num_test: int = NUM_TEST
    seed: int = 0


def digit_captions_config(num_train: int | None = None, num_test: int | None = None,
                          seed: int = 0) -> DigitCaptionsConfig:
    """A config named after its sizes and seed (the default: 10,000 train, 2,000 test, seed 0)."""
    num_train = NUM_TRAIN if num_train is None else int(num_train)
    num_test = NUM_TEST if num_test is None else int(num_test)
    return _config(num_train, num_test, int(seed))


@functools.cache
def _config(num_train: int, num_test: int, seed: int) -> DigitCaptionsConfig:
    """One config object per (sizes, seed): TFDS accepts its registered default only as that object."""
    return DigitCaptionsConfig(name=f"train{num_train}_test{num_test}_seed{seed}", num_train=num_train,
                               num_test=num_test, seed=int(seed),
                               description=f"{num_train} train / {num_test} test canvases, seed {seed}.")


class VisionaxDigitCaptions(tfds.core.GeneratorBasedBuilder):
    """Digit-string canvases 24×48 with captions; build with `VisionaxDigitCaptions(config=digit_captions_config())`."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "1–4 digits, disjoint columns, captions in left-to-right order."}
    BUILDER_CONFIGS = [digit_captions_config()]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description="Canvases of scikit-learn digits captioned with the digits' names, left to right.",
            features=tfds.features.FeaturesDict(
                {
                    "index": tfds.features.Scalar(dtype=np.int64),
                    "image": tfds.features.Tensor(shape=(CANVAS_HEIGHT, CANVAS_WIDTH, 1), dtype=np.uint8),
                    "caption": tfds.features.Tensor(shape=(MAX_LENGTH,), dtype=np.int32),
                    "num_digits": tfds.features.Scalar(dtype=np.int32),
                    "digits": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int32),
                    "boxes": tfds.features.Tensor(shape=(MAX_DIGITS, 4), dtype=np.int32),
                    "sources": tfds.features.Tensor(shape=(MAX_DIGITS,), dtype=np.int32),
                }
            ),
            metadata=tfds.core.MetadataDict(words=list(digit_vocabulary().words)),
        )

    def _split_generators(self, dl_manager):
        images, labels = source_digits()
        pools = split_indices(labels)
        config = self.builder_config
        sizes = {"train": config.num_train, "test": config.num_test}
        return {split: self._generate_examples(split, sizes[split], images, labels, pools[split])
                for split in SPLIT_NUMBERS}

    def _generate_examples(self, split, count, images, labels, pool):
        for index in range(count):
            generator = np.random.default_rng([self.builder_config.seed, SPLIT_NUMBERS[split], index])
            yield index, {"index": index, **compose_canvas(generator, images, labels, pool)}
