"""The deterministic sampler: same seed same batches, epochs are permutations, hosts partition."""

import numpy as np
import pytest

from visionax.data.pipeline import ArraySource, Batches
from visionax.errors import UserError


def make_source(count=50):
    images = np.arange(count * 4, dtype=np.uint8).reshape(count, 2, 2, 1)
    return ArraySource(images, np.arange(count, dtype=np.int32))


def test_same_seed_same_batches_and_new_order_each_epoch():
    first, second = Batches(make_source(), 8, seed=3), Batches(make_source(), 8, seed=3)
    for step in range(20):
        np.testing.assert_array_equal(first.host_batch(step)["label"], second.host_batch(step)["label"])
    other = Batches(make_source(), 8, seed=4)
    assert not np.array_equal(first.host_batch(0)["label"], other.host_batch(0)["label"])
    assert first.steps_per_epoch == 6
    epoch0 = np.concatenate([first.host_batch(step)["label"] for step in range(6)])
    epoch1 = np.concatenate([first.host_batch(step)["label"] for step in range(6, 12)])
    assert len(set(epoch0.tolist())) == 48 and len(set(epoch1.tolist())) == 48
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(epoch0, first.permutation(0)[:48])


def test_batch_images_match_labels():
    batches = Batches(make_source(), 8, seed=0)
    batch = batches.host_batch(5)
    np.testing.assert_array_equal(batch["image"], make_source().images[batch["label"]])


def test_hosts_read_disjoint_shares_of_the_global_batch():
    global_batch = Batches(make_source(), 12, seed=1, process_index=0, process_count=1)
    shares = [Batches(make_source(), 12, seed=1, process_index=p, process_count=3) for p in range(3)]
    for step in (0, 4, 9):
        parts = [share.host_batch(step)["label"] for share in shares]
        assert all(len(part) == 4 for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), global_batch.host_batch(step)["label"])


def test_bad_batch_sizes_are_user_errors():
    with pytest.raises(UserError, match="exceeds the 50 training examples"):
        Batches(make_source(), 64, seed=0)
    with pytest.raises(UserError, match="not divisible by the 3 hosts"):
        Batches(make_source(), 8, seed=0, process_index=0, process_count=3)


def test_a_split_in_memory_gives_the_batches_read_record_by_record():
    """The gather of an `ArraySource` and the record-by-record read of the same records (a plain sequence
    of dicts, as a TFDS data source is) give equal batches, dtypes and shapes, on every host."""
    source = make_source()
    records = [{"image": source.images[index, ..., 0], "label": int(source.labels[index])} for index in range(50)]
    for process_index in range(3):
        in_memory, by_record = (Batches(split, 12, seed=1, process_index=process_index, process_count=3)
                                for split in (source, records))
        for step in (0, 3, 4, 9):
            gathered, read = in_memory.host_batch(step), by_record.host_batch(step)
            for key in ("image", "label"):
                np.testing.assert_array_equal(gathered[key], read[key])
                assert (gathered[key].dtype, gathered[key].shape) == (read[key].dtype, read[key].shape)
