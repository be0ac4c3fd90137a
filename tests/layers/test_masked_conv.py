"""PixelCNN's masks against a reference written position by position and group by group (and a literal
3×3 case), and the masked convolution against `lax.conv_general_dilated` with the masked kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from visionax.layers.masked_conv import MaskedConv, pixelcnn_mask


def reference_mask(kernel_size, in_features, out_features, mask_type, colors):
    """float64 loops: a tap is visible above the centre row or left of the centre in it; at the centre,
    input feature i reaches output feature o when i's colour group (i mod C) comes before o's (A) or
    is o's or before it (B)."""
    height, width = kernel_size
    mask = np.zeros((height, width, in_features, out_features), np.float64)
    for row in range(height):
        for column in range(width):
            for i in range(in_features):
                for o in range(out_features):
                    if row < height // 2 or (row == height // 2 and column < width // 2):
                        mask[row, column, i, o] = 1.0
                    elif row == height // 2 and column == width // 2:
                        in_group, out_group = i % colors, o % colors
                        mask[row, column, i, o] = in_group < out_group if mask_type == "A" else in_group <= out_group
    return mask


@pytest.mark.parametrize("kernel_size", [(1, 1), (3, 3), (5, 5), (7, 7), (1, 3), (3, 5)])
@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_mask_equals_the_reference(kernel_size, colors, mask_type):
    for in_features, out_features in [(colors, 6), (6, 6), (7, 5)]:
        mask = pixelcnn_mask(kernel_size, in_features, out_features, mask_type, colors)
        np.testing.assert_array_equal(mask, reference_mask(kernel_size, in_features, out_features, mask_type, colors))


def test_3x3_masks_written_out():
    """One grey channel: mask A hides the centre, mask B shows it. The image's R, G, B in, two features
    per colour out (R G B R G B): mask A's centre lets G see R and B see R and G; mask B adds the
    diagonal."""
    np.testing.assert_array_equal(pixelcnn_mask((3, 3), 1, 1, "A", 1)[..., 0, 0], [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(pixelcnn_mask((3, 3), 1, 1, "B", 1)[..., 0, 0], [[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    centre_a = np.array([[0, 1, 1, 0, 1, 1], [0, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(pixelcnn_mask((3, 3), 3, 6, "A", 3)[1, 1], centre_a)
    np.testing.assert_array_equal(pixelcnn_mask((3, 3), 3, 6, "B", 3)[1, 1], centre_a + np.tile(np.eye(3), 2))


@pytest.mark.parametrize("conv_impl", ["xla", "gemm"])
@pytest.mark.parametrize("mask_type, colors, kernel_size", [("A", 3, (5, 5)), ("B", 3, (3, 3)), ("B", 1, (1, 3))])
def test_masked_conv_equals_lax_conv_with_the_masked_kernel(conv_impl, mask_type, colors, kernel_size):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 5, 6))
    layer = MaskedConv(9, kernel_size, mask_type, colors, conv_impl=conv_impl)
    variables = layer.init(jax.random.PRNGKey(1), x)
    variables = {"params": {"kernel": variables["params"]["kernel"],
                            "bias": jax.random.normal(jax.random.PRNGKey(2), (9,))}}
    kernel = variables["params"]["kernel"] * reference_mask(kernel_size, 6, 9, mask_type, colors)
    padding = [(size // 2, size // 2) for size in kernel_size]
    expected = lax.conv_general_dilated(x, kernel.astype(jnp.float32), (1, 1), padding,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + variables["params"]["bias"]
    np.testing.assert_allclose(layer.apply(variables, x), expected, rtol=1e-5, atol=1e-5)
    # the masked taps get no gradient, so they never change in training
    grads = jax.grad(lambda params: jnp.sum(jnp.sin(layer.apply({"params": params}, x))))(variables["params"])
    hidden = reference_mask(kernel_size, 6, 9, mask_type, colors) == 0
    assert np.all(np.asarray(grads["kernel"])[hidden] == 0) and np.all(np.asarray(grads["kernel"])[~hidden] != 0)


def test_bad_masks_are_refused():
    with pytest.raises(ValueError, match="odd sizes"):
        pixelcnn_mask((2, 3), 1, 1, "A", 1)
    with pytest.raises(ValueError, match="mask_type 'C'"):
        pixelcnn_mask((3, 3), 1, 1, "C", 1)
