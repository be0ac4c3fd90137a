"""An image folder stored encoded (`data.encoded=True`): the files' bytes are stored, read back as the
raw-pixel storage's images; grain workers give the raw storage's batches (across epochs, after a jump,
on every host count); crops are torchvision's RandomResizedCrop drawn from (seed, step, example); a
training run on the encoded folder ends with the raw run's parameters; bad settings are one line."""

import chex
import numpy as np
import pytest
import scipy.stats
from PIL import Image

from experiments import classify
from experiments.configs.classify import get_config
from visionax import data, parallel
from visionax.data.encoded import DecodedImages, crop_box, decode_image, resized
from visionax.data.pipeline import Batches
from visionax.data.streaming import StreamedBatches
from visionax.errors import UserError
from visionax.evaluate import map_over_batches
from visionax.train import setup
from visionax.train.checkpoint import load_variables

IMAGE_SIZE = 8


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    """3 classes, 10 training and 3 test JPEGs each of sizes 20×16 … 29×34, one of them a 16-bit PNG."""
    root = tmp_path_factory.mktemp("jpegs")
    generator = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 3)):
        for name in ("ant", "bee", "cow"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = generator.integers(0, 256, (20 + index, 16 + 2 * index, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.jpg", quality=90)
    deep = (np.arange(20 * 16, dtype=np.uint16).reshape(20, 16) * 200)
    Image.fromarray(deep).save(root / "train" / "ant" / "deep.png")
    return root


def spec(folder, tmp_path_factory, encoded):
    data_dir = tmp_path_factory.getbasetemp() / "streaming_tfds"
    return data.DatasetSpec(name="image_folder", folder=str(folder), image_size=IMAGE_SIZE, data_dir=str(data_dir),
                            encoded=encoded)


@pytest.fixture(scope="module")
def sources(jpeg_folder, tmp_path_factory):
    """(raw training source, encoded training source as stored)."""
    return (data.data_source(spec(jpeg_folder, tmp_path_factory, False), "train"),
            data.stored_source(spec(jpeg_folder, tmp_path_factory, True), "train"))


def test_the_files_bytes_are_stored_and_read_back_as_the_raw_storage(jpeg_folder, sources, tmp_path_factory):
    raw, stored = sources
    files = sorted(path.read_bytes() for path in (jpeg_folder / "train").rglob("*.*"))
    assert sorted(np.asarray(stored[index]["image"]).tobytes() for index in range(len(stored))) == files
    for split in ("train", "test"):
        raw_images, raw_labels = data.as_arrays(data.data_source(spec(jpeg_folder, tmp_path_factory, False), split))
        images, labels = data.as_arrays(data.data_source(spec(jpeg_folder, tmp_path_factory, True), split))
        np.testing.assert_array_equal(images, raw_images)
        np.testing.assert_array_equal(labels, raw_labels)
    assert sum(len(np.asarray(stored[index]["image"])) for index in range(len(stored))) < 31 * 32 * 26 * 3


@pytest.mark.parametrize("workers", [0, 2])
def test_the_workers_give_the_raw_storages_batches(sources, workers):
    raw, stored = sources
    plain = Batches(raw, 8, seed=4)  # 3 steps per epoch
    streamed = StreamedBatches(stored, 8, seed=4, image_size=IMAGE_SIZE, workers=workers)
    try:
        for step in (0, 1, 2, 3, 4, 7, 2, 3):  # 3 epochs, then a jump back (a resume) and on from there
            expected, batch = plain.host_batch(step), streamed.host_batch(step)
            np.testing.assert_array_equal(batch["image"], expected["image"], err_msg=f"step {step}")
            np.testing.assert_array_equal(batch["label"], expected["label"], err_msg=f"step {step}")
    finally:
        streamed.close()


def test_crops_are_drawn_from_seed_step_and_example_on_any_host_count(sources):
    _, stored = sources
    options = dict(image_size=IMAGE_SIZE, crop_area=(0.2, 0.6), workers=0)
    one_host = StreamedBatches(stored, 8, seed=4, **options)
    hosts = [StreamedBatches(stored, 8, seed=4, process_index=index, process_count=2, **options) for index in range(2)]
    whole = StreamedBatches(stored, 8, seed=4, image_size=IMAGE_SIZE, workers=0)
    for step in (0, 3):
        batch = one_host.host_batch(step)
        np.testing.assert_array_equal(np.concatenate([host.host_batch(step)["image"] for host in hosts]), batch["image"])
        assert not np.array_equal(batch["image"], whole.host_batch(step)["image"])
        index = int(one_host.indices(step)[0])
        image = decode_image(np.asarray(stored[index]["image"]).tobytes())
        box = crop_box(image.height, image.width, (0.2, 0.6), np.random.default_rng([4, 1, step, index]))
        np.testing.assert_array_equal(batch["image"][0], resized(image, IMAGE_SIZE, box))


def test_crop_boxes_follow_torchvisions_random_resized_crop():
    rng = np.random.default_rng(0)
    boxes = np.array([crop_box(2000, 3000, (0.08, 0.5), rng) for _ in range(3000)])
    top, left, height, width = boxes.T
    area = height * width / (2000 * 3000)
    assert scipy.stats.kstest(area, scipy.stats.uniform(0.08, 0.5 - 0.08).cdf).pvalue > 1e-3
    log_ratio = np.log(width / height)
    assert scipy.stats.kstest(log_ratio, scipy.stats.uniform(np.log(3 / 4), np.log(4 / 3) - np.log(3 / 4)).cdf
                              ).pvalue > 1e-3
    assert (top >= 0).all() and (top + height <= 2000).all() and (left + width <= 3000).all()
    assert scipy.stats.kstest(top / (2000 - height + 1), "uniform").pvalue > 1e-3
    # ten failed tries: the central crop of the whole image, clamped to the ratio range
    assert crop_box(10, 100, (1.0, 1.0), rng) == (0, 43, 10, 13)  # too wide: height kept, width 10·4/3
    assert crop_box(100, 10, (1.0, 1.0), rng) == (43, 0, 13, 10)  # too tall: width kept, height 10/(3/4)


def classify_config(folder, data_dir, encoded):
    config = get_config()
    config.epochs, config.batch_size, config.eval_every = 2, 8, 0
    config.data.update({"name": "image_folder", "folder": str(folder), "image_size": IMAGE_SIZE,
                        "data_dir": str(data_dir), "encoded": encoded, "workers": 2})
    return config


def test_a_run_on_the_encoded_folder_ends_with_the_raw_runs_parameters(jpeg_folder, tmp_path, tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "streaming_tfds"
    run = setup.setup(classify_config(jpeg_folder, data_dir, True))
    assert isinstance(run.batches, StreamedBatches) and run.batches.workers == 2
    raw_run = setup.setup(classify_config(jpeg_folder, data_dir, False))
    np.testing.assert_array_equal(run.train.images, raw_run.train.images)
    np.testing.assert_array_equal(run.test.images, raw_run.test.images)
    for encoded in (True, False):
        classify.train_and_evaluate(classify_config(jpeg_folder, data_dir, encoded), str(tmp_path / str(encoded)))
    (streamed, steps), (raw, raw_steps) = (load_variables(tmp_path / str(encoded)) for encoded in (True, False))
    assert steps == raw_steps == 2 * (31 // 8)
    chex.assert_trees_all_equal(streamed, raw)


def test_evaluation_decodes_an_encoded_split_one_chunk_at_a_time(jpeg_folder, tmp_path_factory, monkeypatch):
    data_dir = tmp_path_factory.getbasetemp() / "streaming_tfds"
    run, raw_run = (setup.setup(classify_config(jpeg_folder, data_dir, encoded)) for encoded in (True, False))
    images, raw = run.train.images, raw_run.train.images
    assert isinstance(images, DecodedImages) and images.shape == raw.shape and run.image_shape == raw_run.image_shape
    np.testing.assert_array_equal(run.train.labels, raw_run.train.labels)
    kept = np.array([30, 2, 17])
    for index in (slice(5, 12), slice(None, None, 4), kept, np.arange(31) % 3 == 0, -1, 7):
        np.testing.assert_array_equal(images[index], raw[index], err_msg=str(index))
    events = []  # ("decoded", images decoded by one indexing) and ("placed", batch) in the order they happen
    index_images, put_batch = DecodedImages.__getitem__, parallel.DataParallel.put_batch
    monkeypatch.setattr(DecodedImages, "__getitem__", lambda self, index: events.append(
        ("decoded", len(result := index_images(self, index)))) or result)
    monkeypatch.setattr(parallel.DataParallel, "put_batch", lambda self, batch: events.append(
        ("placed", len(batch))) or put_batch(self, batch))
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    weights = np.random.default_rng(0).normal(size=(IMAGE_SIZE * IMAGE_SIZE * 3, 4)).astype(np.float32)
    function = lambda weights, x: x.reshape(len(x), -1).astype(np.float32) @ weights
    outputs = map_over_batches(data_parallel, function, weights, images, 8)
    np.testing.assert_allclose(outputs, raw.reshape(31, -1).astype(np.float32) @ weights, rtol=1e-5)
    # each chunk decoded when it is placed, never the whole split
    assert events == [("decoded", 8), ("placed", 8)] * 3 + [("decoded", 7), ("placed", 8)]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"on_device": True}, "data.on_device=True places a split held in memory on the devices; data.encoded=True"),
        ({"crop_area": (0.5, 0.2)}, r"data.crop_area=\(0.5, 0.2\) must be \(low, high\) with 0 < low <= high <= 1"),
    ],
)
def test_bad_settings_are_user_errors(jpeg_folder, tmp_path_factory, changes, message):
    config = classify_config(jpeg_folder, tmp_path_factory.getbasetemp() / "streaming_tfds", True)
    config.data.update(changes)
    with pytest.raises(UserError, match=message):
        setup.setup(config)


def test_encoded_storage_of_a_dataset_that_is_not_a_folder_is_a_user_error():
    with pytest.raises(UserError, match="data.encoded=True stores an image folder's files as they are; dataset "
                                        "'digits' is not one"):
        data.DatasetSpec.from_config({"name": "digits", "encoded": True})
