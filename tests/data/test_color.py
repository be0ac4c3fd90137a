"""data.color: L*a*b* against scikit-image's rgb2lab / lab2rgb (D65, 2°) in float64, the round trip,
known anchors, jit and batch shapes, clear errors, and the quantisation against a brute-force
nearest-centre search in NumPy."""

import itertools
import warnings

import chex
import jax
import numpy as np
import pytest
import skimage.color

from visionax.data import color
from visionax.errors import UserError

rgb_to_lab = jax.jit(color.rgb_to_lab)
lab_to_rgb = jax.jit(color.lab_to_rgb)


@pytest.fixture(scope="module")
def colors():
    """float64 RGB `[N, 3]`: random colours, dark ones (the linear branches of the gamma curve and of
    f, Y/Yn ≤ ε), the 8 corners of the RGB cube and grays (one below the gamma threshold 0.04045)."""
    rng = np.random.default_rng(0)
    corners = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    grays = np.repeat(np.array([0.02, 0.04045, 0.1, 0.25, 0.5, 0.75, 0.9])[:, None], 3, axis=1)
    return np.concatenate([rng.uniform(size=(400, 3)), rng.uniform(0, 0.1, size=(200, 3)), corners,
                           grays])


def test_rgb_to_lab_equals_skimage_rgb2lab(colors):
    expected = skimage.color.rgb2lab(colors)
    assert (expected[:, 0] <= color.KAPPA * color.EPSILON).sum() > 20  # L* ≤ κε = 8: f's line used
    chex.assert_trees_all_close(rgb_to_lab(colors.astype(np.float32)), expected, atol=1e-3)
    image = np.random.default_rng(1).uniform(size=(2, 9, 7, 3))  # an image batch, 4 axes
    chex.assert_trees_all_close(rgb_to_lab(image.astype(np.float32)), skimage.color.rgb2lab(image),
                                atol=1e-3)


def test_lab_to_rgb_equals_skimage_lab2rgb(colors):
    lab = skimage.color.rgb2lab(colors)  # in gamut, dark ones included (f⁻¹'s line, L* < 8)
    chex.assert_trees_all_close(lab_to_rgb(lab.astype(np.float32)), skimage.color.lab2rgb(lab),
                                atol=1e-4)


def test_lab_to_rgb_clips_out_of_gamut_as_skimage():
    lab = np.array([[50.0, 120.0, -120.0], [60.0, -100.0, 100.0], [20.0, 0.0, 90.0],
                    [10.0, 20.0, 180.0], [110.0, 0.0, 0.0]])  # the 4th has negative Z (clipped to 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage warns about the negative Z
        expected = skimage.color.lab2rgb(lab)
    assert expected.min() == 0 and expected.max() == 1
    chex.assert_trees_all_close(lab_to_rgb(lab.astype(np.float32)), expected, atol=1e-4)


def test_round_trip_rgb_lab_rgb(colors):
    rgb = colors.astype(np.float32)
    chex.assert_trees_all_close(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-4)


def test_anchors_white_black_red():
    lab = np.asarray(rgb_to_lab(np.array([[1.0, 1, 1], [0, 0, 0], [1, 0, 0]], np.float32)))
    # white: a*, b* ≈ -0.002, 0.005 with scikit-image's 6-digit matrix and white point
    chex.assert_trees_all_close(lab[0], np.array([100.0, 0, 0]), atol=1e-2)
    chex.assert_trees_all_close(lab[1], np.array([0.0, 0, 0]), atol=1e-5)
    chex.assert_trees_all_close(lab[2], np.array([53.24, 80.09, 67.20]), atol=1e-2)


def test_jit_and_leading_shape_give_the_same_values(colors):
    pixels = colors[:600].astype(np.float32)
    batched = pixels.reshape(2, 3, 100, 1, 3)
    eager_lab = color.rgb_to_lab(pixels)
    chex.assert_trees_all_close(rgb_to_lab(batched), np.reshape(eager_lab, batched.shape), atol=1e-4)
    chex.assert_trees_all_close(color.rgb_to_lab(pixels[7]), eager_lab[7], atol=1e-4)  # shape [3]
    chex.assert_trees_all_close(jax.vmap(color.rgb_to_lab)(batched), rgb_to_lab(batched), atol=1e-4)
    eager_rgb = color.lab_to_rgb(eager_lab)
    chex.assert_trees_all_close(lab_to_rgb(np.reshape(eager_lab, batched.shape)),
                                np.reshape(eager_rgb, batched.shape), atol=1e-5)
    assert rgb_to_lab(batched).dtype == lab_to_rgb(batched).dtype == np.float32


@pytest.mark.parametrize("function", [color.rgb_to_lab, color.lab_to_rgb, jax.jit(color.rgb_to_lab)])
def test_wrong_last_axis_or_integer_dtype_raises_one_clear_line(function):
    for shape in [(4, 5, 4), (3, 8, 8), ()]:
        with pytest.raises(UserError, match=r"shape \[\.\.\., 3\].*got shape") as error:
            function(np.zeros(shape, np.float32))
        assert str(shape) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(UserError, match="float .*got dtype uint8.*/ 255"):
        function(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(UserError, match=r"quantize_ab expects ab of shape \[\.\.\., 2\]"):
        color.quantize_ab(np.zeros((5, 3), np.float32))


def _assert_nearest(values: np.ndarray, indices: np.ndarray, centers: np.ndarray) -> None:
    """Each value's assigned centre is at the smallest distance over all centres (ties: either)."""
    distances = np.linalg.norm(values[:, None, :] - centers[None, :, :], axis=-1)  # [N, bins]
    assigned = distances[np.arange(len(values)), indices]
    np.testing.assert_allclose(assigned, distances.min(axis=1), atol=1e-4)


@pytest.mark.parametrize("bins", [1, 7, 10, 50])
def test_quantize_lightness_nearest_center_edges_and_inverse(bins):
    rng = np.random.default_rng(bins)
    centers = np.asarray(color.lightness_bin_centers(bins))
    np.testing.assert_allclose(centers, (np.arange(bins) + 0.5) * 100 / bins, rtol=1e-6)
    values = np.concatenate([rng.uniform(-20, 120, 3000), [0.0, 100.0, -5.0, 250.0]]).astype(np.float32)
    indices = np.asarray(jax.jit(color.quantize_lightness, static_argnums=1)(values, bins))
    assert indices.dtype == np.int32 and indices.shape == values.shape
    assert 0 <= indices.min() and indices.max() <= bins - 1
    _assert_nearest(values[:, None], indices, centers[:, None])
    assert list(indices[-4:]) == [0, bins - 1, 0, bins - 1]  # L = 100 and beyond clip to the top bin
    np.testing.assert_array_equal(color.quantize_lightness(centers, bins), np.arange(bins))
    inside = values[(values >= 0) & (values < 100)]  # the bin is [100k/bins, 100(k+1)/bins)
    np.testing.assert_array_equal(color.quantize_lightness(inside, bins),
                                  np.floor(inside.astype(np.float64) * bins / 100).astype(int))


@pytest.mark.parametrize("grid_size, ab_range", [(10, 110), (20, 110), (5, 20), (2.5, 10)])
def test_quantize_ab_nearest_center_edges_and_inverse(grid_size, ab_range):
    cells = round(2 * ab_range / grid_size)
    centers = np.asarray(color.ab_bin_centers(grid_size, ab_range))
    assert centers.shape == (cells ** 2, 2)
    rng = np.random.default_rng(cells)
    values = rng.uniform(-1.3 * ab_range, 1.3 * ab_range, size=(3000, 2)).astype(np.float32)
    indices = np.asarray(jax.jit(color.quantize_ab, static_argnums=(1, 2))(values, grid_size, ab_range))
    assert indices.dtype == np.int32 and indices.shape == (3000,)
    _assert_nearest(values, indices, centers)
    edges = np.array([[-ab_range, -ab_range], [ab_range, ab_range], [-1e3, 1e3], [1e3, -1e3]],
                     np.float32)
    np.testing.assert_array_equal(color.quantize_ab(edges, grid_size, ab_range),
                                  [0, cells ** 2 - 1, cells - 1, (cells - 1) * cells])
    np.testing.assert_array_equal(color.quantize_ab(centers, grid_size, ab_range),
                                  np.arange(cells ** 2))


def test_ab_grid_is_row_major_with_a_as_row():
    centers = np.asarray(color.ab_bin_centers()).reshape(22, 22, 2)  # defaults: grid 10 over ±110
    axis = np.arange(-105.0, 110.0, 10.0)
    np.testing.assert_allclose(centers[..., 0], np.broadcast_to(axis[:, None], (22, 22)))  # a: row
    np.testing.assert_allclose(centers[..., 1], np.broadcast_to(axis[None, :], (22, 22)))  # b: column
    ab = np.array([[-110.0, -110.0], [-110.0, -100.0], [-100.0, -110.0], [3.0, -47.0],
                   [109.9, 109.9]], np.float32)
    # (3, -47): row ⌊113/10⌋ = 11, column ⌊63/10⌋ = 6, index 11·22 + 6 = 248
    np.testing.assert_array_equal(color.quantize_ab(ab), [0, 1, 22, 248, 483])
    np.testing.assert_allclose(color.ab_bin_centers()[248], [5.0, -45.0])


def test_quantization_settings_errors():
    with pytest.raises(UserError, match="is not a whole number of cells of grid_size=7"):
        color.quantize_ab(np.zeros((1, 2), np.float32), 7, 110)
    with pytest.raises(UserError, match="must be positive"):
        color.ab_bin_centers(0, 110)
    with pytest.raises(UserError, match="bins=0 must be a positive integer"):
        color.quantize_lightness(np.zeros(3), 0)
