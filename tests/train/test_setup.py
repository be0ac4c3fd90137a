"""What an experiment sets up from its config: mesh, batches, splits in memory, and its model."""

import ml_collections
import numpy as np
import pytest

from visionax import data
from visionax.data.pipeline import ArraySource
from visionax.errors import UserError
from visionax.train import setup


def config(digits_dir, **changes):
    values = dict(parallel="shard_map", batch_size=64, seed=0, model="small_cnn",
                  model_options={"widths": [4, 8, 8]}, dtype="float32", conv_impl="xla",
                  data={"name": "digits", "folder": "", "image_size": 32, "data_dir": digits_dir})
    values.update(changes)
    return ml_collections.ConfigDict(values)


def test_setup_reads_the_dataset_and_the_mesh(digits_dir):
    run = setup.setup(config(digits_dir))
    images, labels = data.load_arrays("digits", "test", data_dir=digits_dir)
    np.testing.assert_array_equal(run.test.images, images)
    np.testing.assert_array_equal(run.test.labels, labels)
    assert run.data_parallel.device_count == 8 and run.num_classes == 10 and run.image_shape == (8, 8, 1)
    assert len(run.train.labels) == len(run.batches.source) == 1797 - len(labels)
    assert run.batches.steps_per_epoch == len(run.train.labels) // 64


@pytest.mark.parametrize("limit_mb, held", [(0.0921, True), (0.092, False)])
def test_a_training_split_within_the_limit_is_held_in_memory_with_the_same_batches(digits_dir, limit_mb, held):
    """The digits' 1,438 training images of 8×8×1 bytes take 0.092032 MB."""
    def data_config(limit):
        return {"name": "digits", "folder": "", "image_size": 32, "data_dir": digits_dir, "in_memory_mb": limit}

    run = setup.setup(config(digits_dir, data=data_config(limit_mb)))
    assert isinstance(run.batches.source, ArraySource) == held
    by_record = setup.setup(config(digits_dir, data=data_config(0.0)))
    assert not isinstance(by_record.batches.source, ArraySource)
    for step in (0, 7, 40):
        for key in ("image", "label"):
            np.testing.assert_array_equal(run.batches.host_batch(step)[key], by_record.batches.host_batch(step)[key])
    np.testing.assert_array_equal(run.train.images, by_record.train.images)


def test_model_from_config_takes_the_options_and_overrides():
    model = setup.model_from_config(config("", dtype="bfloat16"), 3, bn_axis_name="data")
    assert (list(model.widths), model.num_classes, model.bn_axis_name) == ([4, 8, 8], 3, "data")
    assert model.dtype == np.dtype("bfloat16")


def test_indivisible_batch_is_a_user_error(digits_dir):
    with pytest.raises(UserError, match="batch_size=60 is not divisible by the 8 devices"):
        setup.setup(config(digits_dir, batch_size=60))
