"""The image-folder builder: Pillow-decoded images resized and stored as uint8 tensors."""

import os

import numpy as np
import pytest
from PIL import Image

from visionax import data
from visionax.data.builders import image_folder
from visionax.errors import UserError


def test_image_folder_is_resized_with_pillow(tmp_path):
    root = tmp_path / "pictures"
    generator = np.random.default_rng(0)
    originals = {}
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(3):
                pixels = generator.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
                originals[(split, name, index)] = pixels
    images, labels = data.load_arrays(
        "image_folder", "train", folder=str(root), image_size=6, data_dir=str(tmp_path / "tfds")
    )
    assert images.shape == (6, 6, 6, 3)
    np.testing.assert_array_equal(np.bincount(labels), [3, 3])
    expected = {
        bytes(np.asarray(Image.fromarray(pixels).resize((6, 6), Image.BILINEAR))): ["cat", "dog"].index(name)
        for (split, name, _), pixels in originals.items() if split == "train"
    }
    assert {bytes(image): int(label) for image, label in zip(images, labels)} == expected


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="--config.data.folder"):
        data.load_arrays("image_folder", "train", folder=str(tmp_path / "absent"), data_dir=str(tmp_path))


def make_folder(root, classes=("cat", "dog"), per_class=2, size=(12, 10), seed=0):
    """A small RGB PNG folder; returns {(split, class, index): pixels}."""
    generator = np.random.default_rng(seed)
    originals = {}
    for split in ("train", "test"):
        for name in classes:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(per_class):
                pixels = generator.integers(0, 256, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index}.png")
                originals[(split, name, index)] = pixels
    return originals


def load(root, tmp_path, split="train", **options):
    return data.load_arrays("image_folder", split, folder=str(root), image_size=4,
                            data_dir=str(tmp_path / "tfds"), **options)


def test_a_folder_with_the_default_name_selects_the_image_folder(tmp_path):
    spec = data.DatasetSpec.from_config({"name": "digits", "folder": str(tmp_path)})
    assert spec.name == "image_folder" and spec.folder == str(tmp_path)
    with pytest.raises(UserError, match="data.folder=.* is read only with data.name=image_folder, not 'cifar10'"):
        data.DatasetSpec.from_config({"name": "cifar10", "folder": str(tmp_path)})


def test_grayscale_rgba_palette_and_16_bit_images_are_converted(tmp_path):
    root = tmp_path / "modes"
    make_folder(root, classes=("a",), per_class=1)
    folder = root / "train" / "a"
    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(gray, mode="L").save(folder / "gray.png")
    rgba = np.random.default_rng(1).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(folder / "rgba.png")
    Image.fromarray(gray, mode="L").convert("P").save(folder / "palette.png")
    deep = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000)
    Image.fromarray(deep).save(folder / "deep.png")
    expected = {
        "gray.png": np.repeat(gray[..., None], 3, -1),
        "rgba.png": rgba[..., :3],
        "palette.png": np.repeat(gray[..., None], 3, -1),
        "deep.png": np.repeat(np.round(deep / 257.0).astype(np.uint8)[..., None], 3, -1),
    }
    for name, pixels in expected.items():
        np.testing.assert_array_equal(image_folder.load_image(folder / name, 4), pixels, err_msg=name)
    images, _ = load(root, tmp_path)
    assert images.shape == (5, 4, 4, 3)
    assert any(np.array_equal(image, expected["deep.png"]) for image in images)  # not clipped to white


def test_a_corrupt_image_is_named_or_skipped_and_counted(tmp_path, capsys):
    root = tmp_path / "broken"
    make_folder(root)
    (root / "train" / "cat" / "truncated.png").write_bytes(
        (root / "train" / "cat" / "0.png").read_bytes()[:40])
    with pytest.raises(UserError, match=r"image '.*train/cat/truncated.png' cannot be decoded .*"
                                        r"--config.data.skip_bad_images=True"):
        load(root, tmp_path)
    images, labels = load(root, tmp_path, skip_bad_images=True)
    assert len(images) == 4
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == [f"note: 1 images that cannot be decoded (skip_bad_images) in {root} were left out "
                     "(e.g. train/cat/truncated.png)"]


def test_non_image_files_are_counted_and_ignored(tmp_path, capsys):
    root = tmp_path / "mixed"
    make_folder(root)
    (root / "train" / "cat" / "README.txt").write_text("not an image")
    (root / "test" / "dog" / ".DS_Store").write_bytes(b"\x00")
    images, _ = load(root, tmp_path)
    assert len(images) == 4
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and notes[0].startswith("note: 2 files that are not images in")


def test_classes_in_only_one_split_and_empty_splits(tmp_path, capsys):
    root = tmp_path / "uneven"
    make_folder(root)
    (root / "train" / "bird").mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / "train" / "bird" / "0.png")
    images, labels = load(root, tmp_path, split="test")  # a class without test images: a note
    assert sorted(set(labels.tolist())) == [1, 2] and len(images) == 4  # bird, cat, dog: cat=1, dog=2
    assert any("class bird of" in line and "has no test images" in line for line in capsys.readouterr().out.splitlines())
    (root / "test" / "fish").mkdir()
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(root / "test" / "fish" / "0.png")
    with pytest.raises(UserError, match="class folder 'fish' is in .*test but not in .*train"):
        load(root, tmp_path)
    empty = tmp_path / "empty"
    make_folder(empty)
    for path in (empty / "test").rglob("*.png"):
        path.unlink()
    with pytest.raises(UserError, match="the test/ split of data folder .* holds no images"):
        load(empty, tmp_path)


def test_a_changed_folder_is_prepared_again(tmp_path):
    root = tmp_path / "changing"
    make_folder(root)
    first, _ = load(root, tmp_path)
    replacement = np.full((12, 10, 3), 7, np.uint8)
    Image.fromarray(replacement).save(root / "train" / "cat" / "0.png")
    os.utime(root / "train" / "cat" / "0.png", ns=(1, 1))  # even with an old modification time
    Image.fromarray(replacement).save(root / "train" / "cat" / "extra.png")
    second, _ = load(root, tmp_path)
    assert len(second) == len(first) + 1
    assert any(np.all(image == 7) for image in second)
