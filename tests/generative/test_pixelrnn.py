"""PixelRNN's Row LSTM: the model against float64 NumPy (each layer a loop over rows and columns written
from the formulas), causality in raster-then-channel order from the Jacobian, and the same logits whichever
convolution implementation computes it."""

import jax
import numpy as np
import pytest

from tests.generative.test_pixelcnn import (assert_causal, dependencies, numpy_level_logits, numpy_masked,
                                            random_parameters)
from visionax.generative.pixelrnn import RowLSTM
from visionax.layers.masked_conv import pixelcnn_mask


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_row_lstm(x, input_kernel, bias, state_kernel, colors):
    """float64 loops: for each row r and column j, a = Σ_t K_is[t]·x[r, j + t − k//2] (masked 1×k) + b
    + Σ_t K_ss[t]·h[r − 1, j + t − k//2]; i, f, o = σ(a_i, a_f, a_o), g = tanh(a_g),
    c[r, j] = f·c[r − 1, j] + i·g, h[r, j] = o·tanh(c[r, j])."""
    batch, height, width, _ = x.shape
    size = input_kernel.shape[1]
    hidden_size = state_kernel.shape[2]
    masked = input_kernel * pixelcnn_mask((1, size), x.shape[-1], 4 * hidden_size, "B", colors)
    h = np.zeros((batch, height + 1, width, hidden_size))  # row 0: the zero state above the image
    c = np.zeros_like(h)
    for row in range(height):
        for column in range(width):
            a = np.tile(bias, (batch, 1))
            for tap in range(size):
                source = column + tap - size // 2
                if 0 <= source < width:
                    a = a + x[:, row, source] @ masked[0, tap] + h[:, row, source] @ state_kernel[0, tap]
            a_i, a_f, a_o, a_g = np.split(a, 4, axis=-1)
            c[:, row + 1, column] = sigmoid(a_f) * c[:, row, column] + sigmoid(a_i) * np.tanh(a_g)
            h[:, row + 1, column] = sigmoid(a_o) * np.tanh(c[:, row + 1, column])
    return h[:, 1:]


def test_row_lstm_equals_numpy_float64():
    """The whole model: 7×7 mask A, x ← x + RowLSTM(x) twice, the output layers."""
    colors, levels = 3, 4
    model = RowLSTM(levels, colors, features=6, depth=2, kernel_size=3, output_features=9)
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 5, colors))
    params = random_parameters(model.init(jax.random.PRNGKey(1), images), seed=2)["params"]
    x = numpy_masked(np.asarray(images, np.float64), params["MaskedConv_0"], "A", colors)
    for layer in range(2):
        layer_params = params[f"RowLSTMLayer_{layer}"]
        x = x + numpy_row_lstm(x, *(np.asarray(leaf, np.float64) for leaf in (
            layer_params["input_to_state"]["kernel"], layer_params["input_to_state"]["bias"],
            layer_params["state_to_state"])), colors)
    expected = numpy_level_logits(x, params["LevelLogits_0"], levels, colors)
    np.testing.assert_allclose(model.apply({"params": params}, images), expected, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("colors", [1, 3])
def test_row_lstm_is_causal(colors):
    """Nothing at or after a sub-pixel reaches its logits; its left neighbour and the pixel above do."""
    depends = dependencies(RowLSTM(levels=3, color_channels=colors, features=6, depth=2, kernel_size=3,
                                   first_kernel_size=3, output_features=12), colors)
    assert_causal(depends)
    target = (3 * 5 + 2) * colors  # the first colour of pixel (3, 2)
    assert depends[target, target - colors] and depends[target, target - 5 * colors]
    assert depends[target, (0 * 5 + 4) * colors]  # three rows up, two columns right: the recurrence's reach


def test_gemm_gives_the_logits_of_xla():
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 5, 4, 3))
    models = [RowLSTM(levels=4, color_channels=3, features=6, depth=1, output_features=6, conv_impl=impl)
              for impl in ("xla", "gemm")]
    variables = models[0].init(jax.random.PRNGKey(1), images)
    np.testing.assert_allclose(models[1].apply(variables, images), models[0].apply(variables, images),
                               rtol=1e-5, atol=1e-5)
