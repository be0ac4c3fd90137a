"""data.augment: values against NumPy indexing and formulas, determinism per key, vmap/jit, and the
distribution of every random draw over thousands of keys (probabilities within 5σ, factors by
Kolmogorov–Smirnov tests, the crop against torchvision's sampler)."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from visionax.data import augment

affine = jax.jit(augment.affine)
crop_and_resize = jax.jit(augment.crop_and_resize, static_argnums=2)
color_jitter = jax.jit(augment.color_jitter)


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(0).uniform(0.05, 0.95, size=(12, 10, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def gray():
    return np.random.default_rng(1).uniform(0.05, 0.95, size=(8, 8, 1)).astype(np.float32)


def test_horizontal_flip_is_numpy_mirror_or_identity(rgb):
    keys = jax.random.split(jax.random.key(0), 16)
    outputs = jax.vmap(augment.horizontal_flip, in_axes=(0, None))(keys, rgb)
    flipped = [bool(np.array_equal(out, rgb[:, ::-1])) for out in outputs]
    kept = [bool(np.array_equal(out, rgb)) for out in outputs]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 0 < sum(flipped) < 16
    assert all(np.array_equal(out, rgb[:, ::-1]) for out in
               jax.vmap(lambda k: augment.horizontal_flip(k, rgb, probability=1.0))(keys))


def test_random_crop_is_a_window_of_the_zero_padded_image(rgb):
    padding = 2
    padded = np.pad(rgb, ((padding, padding), (padding, padding), (0, 0)))
    keys = jax.random.split(jax.random.key(1), 12)
    outputs = np.asarray(jax.jit(jax.vmap(lambda k: augment.random_crop(k, rgb, padding)))(keys))
    offsets = set()
    for out in outputs:
        matches = [(dy, dx) for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)
                   if np.array_equal(out, padded[dy:dy + rgb.shape[0], dx:dx + rgb.shape[1]])]
        assert matches, "the crop is not a window of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 3


def test_crop_and_resize_identity_and_whole_pixel_window(rgb):
    whole = jnp.array([0.0, 0.0, 12.0, 10.0])
    chex.assert_trees_all_close(crop_and_resize(rgb, whole, (12, 10)), rgb, atol=1e-6)
    window = jnp.array([3.0, 2.0, 5.0, 6.0])  # rows 3..7, columns 2..7, same size out
    chex.assert_trees_all_close(crop_and_resize(rgb, window, (5, 6)), rgb[3:8, 2:8], atol=1e-6)


def test_sample_crop_box_respects_area_and_aspect_ranges():
    boxes = np.asarray(jax.vmap(lambda k: augment.sample_crop_box(k, 32, 32))(
        jax.random.split(jax.random.key(2), 400)))
    top, left, height, width = boxes.T
    fraction, aspect = height * width / (32 * 32), width / height
    whole = np.isclose(fraction, 1.0)
    assert np.all((fraction[~whole] >= 0.08 - 1e-6) & (fraction[~whole] <= 1.0 + 1e-6))
    assert np.all((aspect[~whole] >= 0.75 - 1e-5) & (aspect[~whole] <= 4 / 3 + 1e-5))
    assert np.all((top >= 0) & (left >= 0) & (top + height <= 32 + 1e-4) & (left + width <= 32 + 1e-4))
    # The mean area fraction of the same rejection scheme simulated in NumPy (200k draws).
    rng = np.random.default_rng(0)
    areas = rng.uniform(0.08, 1.0, size=(200_000, 10))
    aspects = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3), size=areas.shape))
    fits = (np.sqrt(areas * aspects) <= 1) & (np.sqrt(areas / aspects) <= 1)
    expected = np.where(fits.any(1), areas[np.arange(len(areas)), fits.argmax(1)], 1.0)
    assert abs(np.mean(fraction) - np.mean(expected)) < 0.04  # 3 standard errors of 400 draws


def test_color_jitter_with_strength_zero_is_identity(rgb, gray):
    for image in (rgb, gray):
        keys = jax.random.split(jax.random.key(3), 4)
        outputs = jax.vmap(lambda k: augment.random_color_jitter(k, image, 0.0, probability=1.0))(keys)
        for out in outputs:
            chex.assert_trees_all_close(out, image, atol=2e-6)


def test_color_jitter_operations_match_formulas(rgb, gray):
    # Order (1, 0, 2, 3): contrast first, then brightness; saturation and hue neutral.
    order = jnp.array([1, 0, 2, 3])
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    expected = np.clip(np.clip((rgb - mean) * 1.3 + mean, 0, 1) + 0.1, 0, 1)
    chex.assert_trees_all_close(color_jitter(rgb, 0.1, 1.3, 1.0, 0.0, order), expected, atol=2e-6)
    # Saturation 0 makes every pixel's channels equal to its HSV value max(R, G, B).
    desaturated = color_jitter(rgb, 0.0, 1.0, 0.0, 0.0, jnp.arange(4))
    chex.assert_trees_all_close(desaturated, np.repeat(rgb.max(axis=-1, keepdims=True), 3, -1), atol=2e-6)
    # A hue shift of 1/3 turns (R, G, B) into (B, R, G).
    rotated = color_jitter(rgb, 0.0, 1.0, 1.0, 1 / 3, jnp.arange(4))
    chex.assert_trees_all_close(rotated, rgb[..., [2, 0, 1]], atol=1e-5)
    # One channel: brightness then contrast, the other two ignored.
    expected_gray = np.clip((np.clip(gray - 0.2, 0, 1) - np.clip(gray - 0.2, 0, 1).mean()) * 0.5
                            + np.clip(gray - 0.2, 0, 1).mean(), 0, 1)
    chex.assert_trees_all_close(color_jitter(gray, -0.2, 0.5, 0.0, 0.3, jnp.arange(4)),
                                expected_gray, atol=2e-6)


def test_grayscale_uses_rec601_weights(rgb):
    out = augment.random_grayscale(jax.random.key(0), rgb, probability=1.0)
    luma = rgb @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    chex.assert_trees_all_close(out, np.repeat(luma[..., None], 3, -1), atol=1e-6)
    chex.assert_trees_all_close(augment.random_grayscale(jax.random.key(0), rgb, probability=0.0), rgb)


def test_gaussian_blur_kernel_is_normalised_gaussian():
    impulse = np.zeros((30, 30, 1), np.float32)
    impulse[15, 15] = 1.0
    out = np.asarray(augment.random_gaussian_blur(jax.random.key(4), impulse, probability=1.0,
                                                  sigma_range=(1.5, 1.5)))[..., 0]
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * 1.5 ** 2))  # kernel ⌊0.1·30⌋ = 3 -> 3 taps
    taps /= taps.sum()
    expected = np.zeros((30, 30))
    expected[14:17, 14:17] = np.outer(taps, taps)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert abs(out.sum() - 1.0) < 1e-6


def test_affine_rotation_translation_stretch(gray, rgb):
    chex.assert_trees_all_close(affine(gray, rotation=np.pi / 2), np.rot90(gray), atol=1e-5)
    shifted = np.zeros_like(rgb)
    shifted[2:, :-1] = rgb[:-2, 1:]  # down 2 rows, left 1 column, zeros enter
    chex.assert_trees_all_close(affine(rgb, translation=(2.0, -1.0)), shifted, atol=1e-6)
    # Stretch by 2 along columns about the centre: output column j samples input (j − c)/2 + c.
    centre = (rgb.shape[1] - 1) / 2
    columns = (np.arange(rgb.shape[1]) - centre) / 2 + centre
    left = np.floor(columns).astype(int)
    weight = (columns - left)[None, :, None]
    expected = rgb[:, left] * (1 - weight) + rgb[:, np.minimum(left + 1, rgb.shape[1] - 1)] * weight
    chex.assert_trees_all_close(affine(rgb, stretch=(1.0, 2.0)), expected, atol=1e-5)


def test_simclr_views_deterministic_split_independent_and_jittable():
    images = np.random.default_rng(5).integers(0, 256, size=(8, 12, 12, 3), dtype=np.uint8)
    settings = augment.ViewSettings(output_size=(10, 10), blur_probability=0.5)
    make = jax.jit(augment.simclr_views, static_argnums=2)
    key = jax.random.key(7)
    first, second = make(key, images, settings, 0)
    chex.assert_shape([first, second], (8, 10, 10, 3))
    again = make(key, images, settings, 0)
    chex.assert_trees_all_equal((first, second), again)
    # Examples 4..7 placed first with first_index=4 (as on a second device) get the same views.
    moved = make(key, np.roll(images, -4, axis=0), settings, 4)
    chex.assert_trees_all_close((moved[0][:4], moved[1][:4]), (first[4:], second[4:]), atol=1e-6)
    assert not np.allclose(first, second)
    assert float(jnp.min(first)) >= 0.0 and float(jnp.max(first)) <= 1.0
    other = make(jax.random.key(8), images, settings, 0)
    assert not np.allclose(other[0], first)


def test_random_affine_same_key_same_output(gray):
    key = jax.random.key(9)
    random_affine = jax.jit(augment.random_affine)
    out = random_affine(key, gray)
    chex.assert_trees_all_equal(out, random_affine(key, gray))
    assert not np.allclose(out, gray)
    assert not np.allclose(out, random_affine(jax.random.key(10), gray))


# ------------------------------------------------------------------------------------------------
# The distributions of the random draws, over a few thousand keys.

DRAWS = 4000


def within_5_sigma(hits, probability):
    """The observed rate of `hits` (booleans) is within 5 standard errors of `probability`."""
    rate = float(np.mean(hits))
    sigma = np.sqrt(probability * (1 - probability) / len(hits))
    return abs(rate - probability) <= max(5 * sigma, 1e-9), (rate, probability)


def assert_distribution(samples, cdf, name):
    """A one-sample Kolmogorov–Smirnov test: the samples fit `cdf` (p > 1e-4)."""
    result = scipy.stats.kstest(np.asarray(samples, np.float64), cdf)
    assert result.pvalue > 1e-4, (name, result)


@pytest.fixture(scope="module")
def views():
    """`sample_view` over DRAWS keys under SimCLR's CIFAR settings on a 32×24 image."""
    settings = augment.ViewSettings(output_size=(32, 32), area_range=(0.08, 1.0), flip_probability=0.5,
                                    jitter_strength=0.5, jitter_probability=0.8, grayscale_probability=0.2,
                                    blur_probability=0.5)
    keys = jax.random.split(jax.random.key(11), DRAWS)
    draws = jax.jit(jax.vmap(lambda key: augment.sample_view(key, settings, 32, 24)))(keys)
    return settings, jax.tree.map(np.asarray, draws)


def test_view_settings_default_to_simclrs_augmentation():
    """SimCLR (Chen et al. 2020, appendix A): crops of 8-100% of the area with aspect 3/4-4/3,
    flips with probability 0.5, colour jitter of strength 1 with probability 0.8, grayscale 0.2."""
    defaults = augment.ViewSettings(output_size=(32, 32))
    assert (defaults.area_range, defaults.aspect_range, defaults.flip_probability, defaults.jitter_strength,
            defaults.jitter_probability, defaults.grayscale_probability) == (
        (0.08, 1.0), (3 / 4, 4 / 3), 0.5, 1.0, 0.8, 0.2)


def test_every_probability_is_its_setting(views):
    settings, draws = views
    for hits, probability in ((draws.flip, settings.flip_probability),
                              (draws.jitter.applied, settings.jitter_probability),
                              (draws.grayscale, settings.grayscale_probability),
                              (draws.blur, settings.blur_probability)):
        ok, detail = within_5_sigma(hits, probability)
        assert ok, detail


def test_jitter_factors_follow_simclrs_uniform_ranges(views):
    settings, draws = views
    s = settings.jitter_strength  # 0.8s for brightness, contrast and saturation, 0.2s for hue
    uniform = lambda low, high: scipy.stats.uniform(low, high - low).cdf  # noqa: E731
    assert_distribution(draws.jitter.brightness, uniform(-0.8 * s, 0.8 * s), "brightness")
    assert_distribution(draws.jitter.contrast, uniform(1 - 0.8 * s, 1 + 0.8 * s), "contrast")
    assert_distribution(draws.jitter.saturation, uniform(1 - 0.8 * s, 1 + 0.8 * s), "saturation")
    assert_distribution(draws.jitter.hue, uniform(-0.2 * s, 0.2 * s), "hue")


def test_jitter_order_is_a_uniform_permutation(views):
    _, draws = views
    orders = [tuple(order) for order in draws.jitter.order]
    assert all(sorted(order) == [0, 1, 2, 3] for order in orders)
    counts = np.array([orders.count(order) for order in itertools.permutations(range(4))])
    assert scipy.stats.chisquare(counts).pvalue > 1e-4, counts


def torchvision_crop_boxes(rng, count, height, width, area_range, aspect_range, attempts=10):
    """torchvision's RandomResizedCrop.get_params in NumPy (without its integer rounding):
    `attempts` draws, the first that fits, else the central crop with its ratio clamped."""
    boxes = []
    for _ in range(count):
        for _ in range(attempts):
            area = height * width * rng.uniform(*area_range)
            aspect = np.exp(rng.uniform(np.log(aspect_range[0]), np.log(aspect_range[1])))
            w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
            if w <= width and h <= height:
                boxes.append((h, w))
                break
        else:
            ratio = width / height
            if ratio < aspect_range[0]:
                boxes.append((round(width / aspect_range[0]), width))
            elif ratio > aspect_range[1]:
                boxes.append((height, round(height * aspect_range[1])))
            else:
                boxes.append((height, width))
    return np.array(boxes, np.float64)


def test_crop_area_and_aspect_match_torchvisions_sampler(views):
    settings, draws = views
    _, _, heights, widths = draws.box.T
    reference = torchvision_crop_boxes(np.random.default_rng(0), 20_000, 32, 24, settings.area_range,
                                       settings.aspect_range)
    for name, ours, theirs in (("area", heights * widths / (32 * 24), reference[:, 0] * reference[:, 1] / (32 * 24)),
                               ("aspect", widths / heights, reference[:, 1] / reference[:, 0])):
        result = scipy.stats.ks_2samp(ours, theirs)
        assert result.pvalue > 1e-4, (name, result)
    top, left = draws.box[:, 0], draws.box[:, 1]
    assert np.all((top >= 0) & (left >= 0) & (top + heights <= 32 + 1e-4) & (left + widths <= 24 + 1e-4))


@pytest.mark.parametrize("height, width", [
    (32, 32),  # inside the ratio range: the whole image
    (40, 10),  # too tall: width 10, height round(10 / (3/4)) = 13, centred
    (10, 40),  # too wide: height 10, width round(10 · 4/3) = 13, centred
])
def test_crop_fallback_is_torchvisions_central_crop(height, width):
    # an impossible area range forces the fallback: no candidate fits
    box = np.asarray(augment.sample_crop_box(jax.random.key(0), height, width, area_range=(2.0, 3.0)))
    reference = torchvision_crop_boxes(np.random.default_rng(0), 1, height, width, (2.0, 3.0), (3 / 4, 4 / 3))[0]
    np.testing.assert_allclose(box[2:], reference)
    np.testing.assert_allclose(box[:2], [(height - reference[0]) / 2, (width - reference[1]) / 2])


def test_augment_view_applies_exactly_the_sampled_parameters(rgb):
    """augment_view = apply_view ∘ sample_view, and apply_view is crop, flip, jitter, grayscale,
    blur in that order with the drawn values (the operations are tested against formulas above)."""
    settings = augment.ViewSettings(output_size=(8, 8), jitter_strength=0.5, blur_probability=0.5)
    for index in range(6):
        key = jax.random.key(20 + index)
        parameters = augment.sample_view(key, settings, *rgb.shape[:2])
        expected = augment.crop_and_resize(rgb, parameters.box, settings.output_size)
        expected = expected[:, ::-1] if parameters.flip else expected
        jitter = parameters.jitter
        if jitter.applied:
            expected = augment.color_jitter(expected, jitter.brightness, jitter.contrast, jitter.saturation,
                                            jitter.hue, jitter.order)
        if parameters.grayscale:
            expected = np.repeat((np.asarray(expected) @ np.array([0.2989, 0.5870, 0.1140], np.float32))[..., None],
                                 3, -1)
        if parameters.blur:
            expected = augment.apply_gaussian_blur(jnp.asarray(expected), True, parameters.sigma)
        chex.assert_trees_all_close(augment.augment_view(key, rgb, settings), expected, atol=1e-5)
