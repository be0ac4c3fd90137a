"""Evaluation over the mesh: padded batches, and a function mapped over them equals applying it directly."""

import functools

import numpy as np
import pytest

from visionax import parallel
from visionax.evaluate.batches import map_over_batches, padded_batches


def test_padded_batches_pad_the_last_chunk():
    chunks = list(padded_batches(np.arange(10).reshape(10, 1), 4))
    assert [valid for _, valid in chunks] == [4, 4, 2]
    np.testing.assert_array_equal(chunks[-1][0][:, 0], [8, 9, 0, 0])
    np.testing.assert_array_equal(np.concatenate([chunk[:valid] for chunk, valid in chunks])[:, 0], np.arange(10))


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_map_over_batches_matches_direct_application(impl):
    images = np.random.default_rng(1).normal(size=(21, 3)).astype(np.float32)
    weights = {"w": np.arange(6, dtype=np.float32).reshape(3, 2)}
    function = functools.partial(lambda variables, x: x @ variables["w"])
    data_parallel = parallel.DataParallel(parallel.make_mesh(), impl)
    out = map_over_batches(data_parallel, function, weights, images, 16)
    assert out.shape == (21, 2)
    np.testing.assert_allclose(out, images @ weights["w"], rtol=1e-6)
