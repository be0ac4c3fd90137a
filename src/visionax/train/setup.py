"""What every training experiment sets up from its config: the device mesh, the training batches,
the labelled arrays its evaluations read, and its model."""

from __future__ import annotations

import dataclasses
import functools

import ml_collections

from visionax import data, models, parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.train.precision import compute_dtype

__all__ = ["Setup", "setup", "model_from_config"]


@dataclasses.dataclass(frozen=True)
class Setup:
    """The mesh (`data_parallel`), the dataset, its training `batches` and its splits in memory."""

    data_parallel: parallel.DataParallel
    spec: data.DatasetSpec
    batches: Batches

    @functools.cached_property
    def train(self) -> ArraySource:
        """The whole training split as arrays (uint8 images `[n, h, w, c]`, int32 labels `[n]`)."""
        return ArraySource(*data.as_arrays(self.batches.source))

    @functools.cached_property
    def test(self) -> ArraySource:
        """The whole test split as arrays."""
        return ArraySource(*data.as_arrays(data.data_source(self.spec, "test")))

    @functools.cached_property
    def num_classes(self) -> int:
        return data.num_classes(self.spec)

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
    batches = Batches(data.data_source(spec, "train"), config.batch_size, config.seed)
    return Setup(data_parallel, spec, batches)


def model_from_config(config: ml_collections.ConfigDict, num_classes: int | None, **options):
    """`visionax.models.get_model(config.model, ...)` with the config's `model_options`, `dtype`
    and `conv_impl`; `options` add to or override the model options (e.g. `bn_axis_name`)."""
    return models.get_model(config.model, num_classes=num_classes, dtype=compute_dtype(config.dtype),
                            conv_impl=config.conv_impl, **(config.model_options.to_dict() | options))
