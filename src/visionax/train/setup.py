"""What every training experiment sets up from its config: the device mesh, the training batches,
the labelled arrays its evaluations read, and its model.

The splits may be subsets (`visionax.data.subsets`, all off by default): `config.data.classes`
keeps some classes of both splits, relabelled 0..k−1 in the order given; `config.validation_fraction`
holds out that share of each class of the training split for validation; `config.data.label_fraction`
then keeps that share of each class of what is left for training (the labelled subset). All are
drawn from the labels and `config.seed`, so every run with the same config reads the same examples.
A training split whose images take at most `config.data.in_memory_mb` megabytes (default 4,000) is read
once into memory, and its batches are gathered by index: the same batches as record by record; with
`config.data.on_device` the split is placed on the devices and gathered inside the step (`feed`). An
image folder stored encoded (`config.data.encoded`) is decoded by grain workers (`StreamedBatches`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import ml_collections
import numpy as np

from visionax import data, models, parallel
from visionax.data.encoded import WHOLE_IMAGE, DecodedImages
from visionax.data.pipeline import ArraySource, Batches
from visionax.data.streaming import StreamedBatches
from visionax.data.subsets import SubsetSource, class_indices, parse_classes, stratified_fraction, validation_split
from visionax.train import feed
from visionax.train.precision import compute_dtype

IN_MEMORY_MB = 4000.0  # training splits up to this size are held in memory (config.data.in_memory_mb)

__all__ = ["IN_MEMORY_MB", "Setup", "setup", "in_memory", "model_from_config"]


@dataclasses.dataclass(frozen=True)
class Setup:
    """The mesh (`data_parallel`), the dataset, its training `batches` and its splits in memory;
    `test_source` and `validation_source` where the config asks for subsets, and the `classes` kept."""

    data_parallel: parallel.DataParallel
    spec: data.DatasetSpec
    batches: Batches
    test_source: Sequence[dict] | None = None
    validation_source: Sequence[dict] | None = None
    classes: tuple[int, ...] = ()

    @functools.cached_property
    def train(self) -> ArraySource:
        """The whole training split as arrays (uint8 images `[n, h, w, c]`, int32 labels `[n]`)."""
        source = self.batches.source
        return source if isinstance(source, ArraySource) else self.arrays(source)

    @functools.cached_property
    def test(self) -> ArraySource:
        """The whole test split as arrays."""
        return self.arrays(self.test_source if self.test_source is not None else data.stored_source(self.spec, "test"))

    @functools.cached_property
    def validation(self) -> ArraySource | None:
        """The validation split as arrays (None without `config.validation_fraction`)."""
        return None if self.validation_source is None else self.arrays(self.validation_source)

    def arrays(self, source: Sequence[dict]) -> ArraySource:
        """The records of the stored `source` as arrays; images stored encoded stay encoded until
        indexed (`DecodedImages`: evaluation decodes them chunk by chunk), their labels are read."""
        if not self.spec.encoded:
            return ArraySource(*data.as_arrays(source))
        return ArraySource(DecodedImages(source, self.spec.image_size), _labels(source).astype(np.int32))

    @functools.cached_property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else data.num_classes(self.spec)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.test.images.shape[1:])


def setup(config: ml_collections.ConfigDict) -> Setup:
    """Start the hosts, build the mesh of `config.parallel`, check `config.batch_size` against the
    devices and open the dataset of `config.data` (raises UserError on bad input)."""
    parallel.initialize_distributed()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), config.parallel)
    parallel.check_batch_size(config.batch_size, data_parallel.device_count)
    spec = data.DatasetSpec.from_config(config.data)
    train, test, validation, classes = _subsets(config, spec)
    if spec.encoded:
        batches = StreamedBatches(train, config.batch_size, config.seed, image_size=spec.image_size,
                                  crop_area=tuple(config.data.get("crop_area", WHOLE_IMAGE)),
                                  workers=config.data.get("workers", 2), prefetch=config.data.get("prefetch", 2))
    else:
        train = in_memory(train, config.data.get("in_memory_mb", IN_MEMORY_MB))
        batches = Batches(train, config.batch_size, config.seed)
    feed.check(config, batches)
    return Setup(data_parallel, spec, batches, test, validation, classes)


def in_memory(source: Sequence[dict], limit_mb: float) -> Sequence[dict]:
    """`source` as arrays (`ArraySource`: batches gathered by index) when its images take at most
    `limit_mb` megabytes (10^6 bytes), else `source` itself (read record by record)."""
    if not len(source) or isinstance(source, ArraySource):
        return source
    image_bytes = np.asarray(source[0]["image"], np.uint8).nbytes
    if len(source) * image_bytes > limit_mb * 1e6:
        return source
    return ArraySource(*data.as_arrays(source))


def _labels(source: Sequence[dict]) -> np.ndarray:
    return np.asarray([source[index]["label"] for index in range(len(source))], np.int64)


def _subsets(config: ml_collections.ConfigDict, spec: data.DatasetSpec):
    """(training source, test source or None, validation source or None, classes kept or ()) of the
    config's subset keys; the whole training split and Nones when none is set."""
    train = data.stored_source(spec, "train")
    class_text = config.data.get("classes", "")
    label_fraction = config.data.get("label_fraction", 1.0)
    validation_fraction = config.get("validation_fraction", 0.0)
    if not class_text and label_fraction == 1.0 and not validation_fraction:
        return train, None, None, ()
    labels = _labels(train)
    classes = parse_classes(class_text, data.num_classes(spec))
    indices, relabel, test = np.arange(len(train)), None, None
    if class_text:
        indices, relabel = class_indices(labels, classes)
        test_source = data.stored_source(spec, "test")
        test = SubsetSource(test_source, class_indices(_labels(test_source), classes)[0], relabel)
    validation = None
    if validation_fraction:
        kept, held_out = validation_split(labels[indices], validation_fraction, config.seed)
        validation, indices = SubsetSource(train, indices[held_out], relabel), indices[kept]
    if label_fraction != 1.0:
        indices = indices[stratified_fraction(labels[indices], label_fraction, config.seed)]
    return SubsetSource(train, indices, relabel), test, validation, classes if class_text else ()


def model_from_config(config: ml_collections.ConfigDict, num_classes: int | None, **options):
    """`visionax.models.get_model(config.model, ...)` with the config's `model_options`, `dtype`
    and `conv_impl`; `options` add to or override the model options (e.g. `bn_axis_name`)."""
    return models.get_model(config.model, num_classes=num_classes, dtype=compute_dtype(config.dtype),
                            conv_impl=config.conv_impl, **(config.model_options.to_dict() | options))
