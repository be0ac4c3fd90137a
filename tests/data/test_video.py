"""The synthetic video builder: fixed by its seed, masks that name the pixels of each object's colour
over a static background, sprites drawn at their positions, and motion that follows the velocity and
bounces off the edges, recomputed in NumPy."""

import dataclasses

import numpy as np
import pytest
import skimage.color

from visionax.data import video
from visionax.data.builders.digits import source_digits, split_indices
from visionax.errors import UserError

SETTINGS = video.VideoSettings(frames=6, height=20, width=24, objects=3, min_size=5, max_size=8, max_speed=3,
                               noise=0.0, stripes=0.0)  # flat colours: masked pixels show exactly their object's
SQUARE, DISC, DIGIT = (video.KINDS.index(kind) for kind in ("square", "disc", "digit"))


@pytest.fixture(scope="module")
def videos():
    return video.moving_objects(16, SETTINGS, seed=3)


def test_videos_depend_on_seed_split_and_index_alone(videos):
    again = video.moving_objects(5, SETTINGS, seed=3)
    for key in videos:
        np.testing.assert_array_equal(again[key], videos[key][:5])
    assert videos["frames"].shape == (16, 6, 20, 24, 3) and videos["frames"].dtype == np.uint8
    assert videos["masks"].shape == (16, 6, 20, 24) and videos["masks"].dtype == np.int32
    for other in (video.moving_objects(5, SETTINGS, seed=4), video.moving_objects(5, SETTINGS, seed=3, split="test")):
        assert not np.array_equal(other["frames"], videos["frames"][:5])
        assert not np.array_equal(other["positions"], videos["positions"][:5])


def test_every_masked_pixel_has_its_objects_colour_and_the_background_stays_still(videos):
    frames, masks, colors = videos["frames"], videos["masks"], videos["colors"]
    for index in range(len(frames)):
        assert len({tuple(color) for color in colors[index]}) == SETTINGS.objects  # hues spread apart
        for k in range(SETTINGS.objects):
            inside = masks[index] == k + 1
            assert inside.any()
            np.testing.assert_array_equal(frames[index][inside], np.broadcast_to(colors[index, k], (inside.sum(), 3)))
        uncovered = masks[index] == 0  # a pixel uncovered in two frames shows the same background in both
        for t in range(1, SETTINGS.frames):
            both = uncovered[0] & uncovered[t]
            np.testing.assert_array_equal(frames[index, t][both], frames[index, 0][both])
        background = frames[index][uncovered].astype(float)
        assert background.std(0).max() > 1  # textured, not flat


def test_objects_are_nearly_isoluminant_with_hues_apart():
    """In scikit-image's L*a*b*: the objects' L* within 2·lightness_spread (plus what clipping to the
    RGB gamut moves), chroma >= 25 (the drawn 35..55, less clipping), hue angles well apart."""
    colors = video.moving_objects(100, video.VideoSettings(), seed=1)["colors"]
    lab = skimage.color.rgb2lab(colors / 255.0)  # [100, 3 objects, 3]
    lightness_range = np.ptp(lab[..., 0], axis=1)
    assert np.median(lightness_range) < 2 * 3.0 and lightness_range.max() < 2 * 3.0 + 2
    assert np.hypot(lab[..., 1], lab[..., 2]).min() > 25
    angles = np.sort(np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360, axis=1)
    gaps = np.diff(np.concatenate([angles, angles[:, :1] + 360], axis=1), axis=1)
    assert gaps.min() > 30 and np.median(gaps) > 100  # drawn >= 48° apart (u_k within ±0.3); clipping turns some


def test_stripes_and_camera_noise_scale_each_pixel_by_one_factor_for_its_three_channels():
    clean = video.moving_objects(4, SETTINGS, seed=5)
    striped = video.moving_objects(4, dataclasses.replace(SETTINGS, stripes=0.2), seed=5)
    noisy = video.moving_objects(4, dataclasses.replace(SETTINGS, stripes=0.2, noise=0.05), seed=5)
    np.testing.assert_array_equal(clean["masks"], noisy["masks"])
    rounding = (0.5 + 0.5 * 1.25) / 59.5  # both the colour and the pixel are rounded to uint8
    for videos, amplitude in ((striped, 0.2), (noisy, 0.2 + 0.05 + 0.2 * 0.05)):
        for index in range(4):
            for k in range(SETTINGS.objects):
                inside = videos["masks"][index] == k + 1
                color = videos["colors"][index, k].astype(float)
                kept = (color > 60) & (color < 255 / 1.26)  # bright enough, never clipped at 255
                ratios = videos["frames"][index][inside][:, kept] / color[kept]  # [pixels, channels]
                assert np.all(np.abs(ratios - 1) <= amplitude + rounding)
                assert np.all(np.ptp(ratios, axis=1) <= 2 * rounding)  # one factor for all three channels
                assert np.ptp(ratios) > 0.2  # that varies over the object
    # the stripes move with their object: the top sprite's pixels at t + 1 are those at t, moved
    for index in range(4):
        for t in range(SETTINGS.frames - 1):
            top, moved = striped["positions"][index, t, -1], striped["positions"][index, t + 1, -1]
            size = striped["sizes"][index, -1]
            before = striped["frames"][index, t, top[0]:top[0] + size, top[1]:top[1] + size]
            after = striped["frames"][index, t + 1, moved[0]:moved[0] + size, moved[1]:moved[1] + size]
            sprite = striped["masks"][index, t, top[0]:top[0] + size, top[1]:top[1] + size] == SETTINGS.objects
            np.testing.assert_array_equal(after[sprite], before[sprite])
    changed = noisy["frames"][:, 1:].astype(int) - noisy["frames"][:, :1]
    assert np.mean(changed[clean["masks"][:, 1:] == 0] != 0) > 0.8  # camera noise: the still background flickers


def sprite_of(kind, size):
    """The square's and the disc's footprints, recomputed: every pixel, or the pixel centres within
    size/2 of the sprite's centre."""
    if kind == SQUARE:
        return np.ones((size, size), bool)
    rows, columns = np.mgrid[:size, :size] + 0.5
    return (rows - size / 2) ** 2 + (columns - size / 2) ** 2 <= (size / 2) ** 2


def test_sprites_sit_at_their_positions_under_the_objects_drawn_after_them(videos):
    masks, positions, kinds, sizes = (videos[key] for key in ("masks", "positions", "kinds", "sizes"))
    assert set(np.unique(kinds)) == {SQUARE, DISC, DIGIT}
    assert sizes.min() >= SETTINGS.min_size and sizes.max() <= SETTINGS.max_size
    checked = 0
    for index in range(len(masks)):
        for t in range(SETTINGS.frames):
            covered, known = np.zeros(masks.shape[2:], bool), True  # the footprints of the objects above
            for k in reversed(range(SETTINGS.objects)):  # the last drawn is on top
                top, left, size = *positions[index, t, k], sizes[index, k]
                inside = masks[index, t] == k + 1
                box = np.zeros_like(inside)
                box[top:top + size, left:left + size] = True
                assert not (inside & ~box).any()
                if kinds[index, k] == DIGIT:
                    known = False  # its hidden pixels are not known: no exact check below it
                    continue
                footprint = np.zeros_like(inside)
                footprint[top:top + size, left:left + size] = sprite_of(kinds[index, k], size)
                if known:
                    np.testing.assert_array_equal(inside, footprint & ~covered)
                    checked += 1
                covered |= footprint
    assert checked > 60


def reflect(position, velocity, limit):
    """p + v reflected into [0, limit] coordinate by coordinate, and the velocity after the bounce."""
    new_position, new_velocity = [], []
    for p, v, top in zip(position, velocity, limit):
        moved = p + v
        if moved < 0 or moved > top:
            moved, v = (-moved if moved < 0 else 2 * top - moved), -v
        new_position.append(moved)
        new_velocity.append(v)
    return new_position, new_velocity


def test_motion_is_constant_velocity_bouncing_off_the_edges_and_the_centroid_follows(videos):
    positions, velocities, masks, sizes = (videos[key] for key in ("positions", "velocities", "masks", "sizes"))
    moves = bounces = 0
    for index in range(len(positions)):
        assert all(velocity.any() and np.abs(velocity).max() <= SETTINGS.max_speed for velocity in velocities[index, 0])
        for k in range(SETTINGS.objects):
            limit = (SETTINGS.height - sizes[index, k], SETTINGS.width - sizes[index, k])
            for t in range(SETTINGS.frames - 1):
                expected_position, expected_velocity = reflect(positions[index, t, k], velocities[index, t, k], limit)
                np.testing.assert_array_equal(positions[index, t + 1, k], expected_position)
                np.testing.assert_array_equal(velocities[index, t + 1, k], expected_velocity)
        top = SETTINGS.objects  # never covered: its whole sprite moves
        for t in range(SETTINGS.frames - 1):
            centroids = [np.argwhere(masks[index, frame] == top).mean(0) for frame in (t, t + 1)]
            centroid_move = centroids[1] - centroids[0]
            np.testing.assert_allclose(centroid_move, positions[index, t + 1, -1] - positions[index, t, -1], atol=1e-12)
            if np.array_equal(velocities[index, t + 1, -1], velocities[index, t, -1]):
                np.testing.assert_allclose(centroid_move, velocities[index, t, -1], atol=1e-12)
                moves += 1
            else:
                bounces += 1
    assert moves > 20 and bounces > 5


def test_digit_sprites_are_thresholded_digits_of_their_split():
    images, labels = source_digits()
    shapes = {split: {bytes(image >= video.DIGIT_THRESHOLD) for image in images[split_indices(labels)[split]]}
              for split in ("train", "test")}
    settings = video.VideoSettings(frames=2, height=9, width=9, objects=1, min_size=8, max_size=8, max_speed=1)
    for split in ("train", "test"):
        videos = video.moving_objects(40, settings, seed=1, split=split)
        digits = np.flatnonzero(videos["kinds"][:, 0] == DIGIT)
        assert len(digits) > 5
        only_other = shapes["test" if split == "train" else "train"] - shapes[split]
        for index in digits:
            top, left = videos["positions"][index, 0, 0]
            sprite = bytes(videos["masks"][index, 0, top:top + 8, left:left + 8] == 1)
            assert sprite in shapes[split] and sprite not in only_other


@pytest.mark.parametrize("change, message", [
    ({"frames": 1}, "frames=1 must be >= 2"),
    ({"objects": 0}, "objects=0 must be >= 1"),
    ({"max_size": 31}, "need min_size <= max_size <= min\\(height, width\\) - max_speed = 30"),
    ({"min_size": 9, "max_size": 8}, "min_size=9, max_size=8"),
    ({"texture": 1.5}, "texture=1.5 must be in \\[0, 1\\)"),
    ({"noise": -0.1}, "noise=-0.1 must be in \\[0, 1\\)"),
    ({"stripes": 1.0}, "stripes=1.0 must be in \\[0, 1\\)"),
    ({"lightness_spread": 50}, "lightness_spread=50 must be in \\[0, 40\\]"),
])
def test_bad_settings_are_one_line_user_errors(change, message):
    with pytest.raises(UserError, match=message) as error:
        video.VideoSettings(**change)
    assert "\n" not in str(error.value)


def test_a_bad_split_or_count_is_a_user_error():
    with pytest.raises(UserError, match="unknown video split 'valid'"):
        video.moving_objects(1, split="valid")
    with pytest.raises(UserError, match="count >= 1"):
        video.moving_objects(0)
