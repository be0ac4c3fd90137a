"""The PixelCNN and the gated PixelCNN: both models against float64 NumPy written from the formulas,
causality in raster-then-channel order read off the Jacobian of the logits w.r.t. the input, the gated
model's receptive field exactly (no blind spot), the plain model's blind spot; the registry's errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.errors import UserError
from visionax.generative import autoregressive
from visionax.generative.pixelcnn import PixelCNN, level_input
from visionax.layers.masked_conv import pixelcnn_mask

HEIGHT = WIDTH = 5


def numpy_conv(x, kernel, bias, padding=None):
    """float64 y[n, i, j] = Σ_{r,s} x_padded[n, i + r, j + s] · kernel[r, s] + bias, zeros outside the
    image; `padding` ((top, bottom), (left, right)), by default centred on each pixel."""
    height, width = kernel.shape[:2]
    (top, bottom), (left, right) = padding or ((height // 2, height // 2), (width // 2, width // 2))
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    rows, columns = padded.shape[1] - height + 1, padded.shape[2] - width + 1
    return sum(padded[:, r:r + rows, c:c + columns] @ kernel[r, c] for r in range(height) for c in range(width)) + bias


def numpy_masked(x, params, mask_type, colors):
    """The masked convolution: the kernel times `pixelcnn_mask` (tested against its own reference)."""
    kernel = np.asarray(params["kernel"], np.float64)
    mask = pixelcnn_mask(kernel.shape[:2], kernel.shape[2], kernel.shape[3], mask_type, colors)
    return numpy_conv(x, kernel * mask, np.asarray(params["bias"], np.float64))


def numpy_level_logits(x, params, levels, colors):
    """ReLU, 1×1 mask B, ReLU, 1×1 mask B; feature l·C + c is level l of colour c: `[N, H, W, C, levels]`."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    hidden = numpy_masked(relu(x), params["MaskedConv_0"], "B", colors)
    out = numpy_masked(relu(hidden), params["MaskedConv_1"], "B", colors)
    return out.reshape(*out.shape[:-1], levels, colors).swapaxes(-1, -2)


def numpy_pixelcnn(x, params, levels, colors, depth):
    """7×7 mask A, then x ← x + 1×1(ReLU(3×3(ReLU(1×1(ReLU(x)))))) (mask B) `depth` times, the output layers."""
    relu = lambda a: np.maximum(a, 0)  # noqa: E731
    x = numpy_masked(x, params["MaskedConv_0"], "A", colors)
    for block in range(depth):
        reduce, spatial, expand = (params[f"MaskedConv_{1 + 3 * block + index}"] for index in range(3))
        y = numpy_masked(relu(x), reduce, "B", colors)
        y = numpy_masked(relu(y), spatial, "B", colors)
        x = x + numpy_masked(relu(y), expand, "B", colors)
    return numpy_level_logits(x, params["LevelLogits_0"], levels, colors)


def numpy_gated_pixelcnn(x, params, levels, colors, depth):
    """Per layer: v_pre = V ⊛ v (rows i − k//2 .. i), v ← tanh ⊙ σ of v_pre's halves; h ← [h +]
    1×1_B(gate(H_mask ⊛ h + L ⊛ v_pre[i − 1])), the first layer mask A and not residual."""
    def gate(a):
        first, second = np.split(a, 2, axis=-1)
        return np.tanh(first) / (1 + np.exp(-second))

    vertical = horizontal = x
    for layer in range(depth + 1):
        layer_params = {name: {key: np.asarray(value, np.float64) for key, value in values.items()}
                        for name, values in params[f"GatedLayer_{layer}"].items()}
        kernel = layer_params["vertical"]["kernel"]
        half = kernel.shape[1] // 2
        vertical_pre = numpy_conv(vertical, kernel, layer_params["vertical"]["bias"], ((half, 0), (half, half)))
        shifted = np.concatenate([np.zeros_like(vertical_pre[:, :1]), vertical_pre[:, :-1]], axis=1)
        link = numpy_conv(shifted, layer_params["link"]["kernel"], layer_params["link"]["bias"])
        pre = numpy_masked(horizontal, layer_params["horizontal"], "A" if layer == 0 else "B", colors) + link
        out = numpy_masked(gate(pre), layer_params["horizontal_out"], "B", colors)
        vertical, horizontal = gate(vertical_pre), out if layer == 0 else horizontal + out
    return numpy_level_logits(horizontal, params["LevelLogits_0"], levels, colors)


def random_parameters(variables, seed):
    """Every parameter shifted by N(0, 0.5²) noise and every bias by +1 more (no zero biases)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return treedef.unflatten([leaf + 0.5 * jax.random.normal(key, leaf.shape) + (path[-1].key == "bias")
                              for (path, leaf), key in zip(leaves, keys)])


@pytest.mark.parametrize("gated", [False, True])
def test_pixelcnn_equals_numpy_float64(gated):
    colors, levels, depth = 3, 4, 2
    model = PixelCNN(levels, colors, features=6, depth=depth, output_features=9, gated=gated)
    images = jax.random.uniform(jax.random.PRNGKey(0), (2, 6, 5, colors))
    variables = random_parameters(model.init(jax.random.PRNGKey(1), images), seed=2)
    reference = numpy_gated_pixelcnn if gated else numpy_pixelcnn
    expected = reference(np.asarray(images, np.float64), variables["params"], levels, colors, depth)
    np.testing.assert_allclose(model.apply(variables, images), expected, rtol=2e-4, atol=2e-4)


def position(row, column, color, colors):
    """Raster-then-channel index of a sub-pixel: (row·W + column)·C + color."""
    return (row * WIDTH + column) * colors + color


def dependencies(model, colors, seed=0):
    """`[D, D]` booleans (D = H·W·C, raster-then-channel order): entry (p, q) is whether some level's
    logit of sub-pixel p has a non-zero derivative w.r.t. input sub-pixel q, at a random image and
    random parameters (`random_parameters`: with zero-mean biases all units of a colour group at a
    pixel were often negative before an output layer's ReLU, which cuts that logit off from everything)."""
    image = jax.random.uniform(jax.random.PRNGKey(seed), (1, HEIGHT, WIDTH, colors))
    variables = random_parameters(model.init(jax.random.PRNGKey(seed + 1), image), seed + 2)
    jacobian = jax.jit(jax.jacrev(lambda x: model.apply(variables, x)[0]))(image)  # [H, W, C, L, 1, H, W, C]
    size = HEIGHT * WIDTH * colors
    return np.abs(np.asarray(jacobian)).max(axis=3).reshape(size, size) > 0


def assert_causal(depends):
    """No logit depends on its own sub-pixel or a later one."""
    later = np.triu(np.ones_like(depends), 0)
    assert not np.any(depends & later), np.argwhere(depends & later)[:5]


def gated_receptive_field(colors, reach):
    """What the gated PixelCNN's logit at (i, j, c) sees: the rows i − reach − 1 .. i − 1 at columns
    j ± reach (the vertical stack, shifted down), row i at columns j − reach .. j − 1 (the horizontal
    stack) and the colours before c of pixel (i, j)."""
    size = HEIGHT * WIDTH * colors
    field = np.zeros((size, size), bool)
    pixels = list(itertools.product(range(HEIGHT), range(WIDTH), range(colors)))
    for (row, column, color), (row2, column2, color2) in itertools.product(pixels, pixels):
        if row2 < row:
            seen = row - row2 <= reach + 1 and abs(column2 - column) <= reach
        elif row2 == row:
            seen = column - reach <= column2 < column or (column2 == column and color2 < color)
        else:
            seen = False
        field[position(row, column, color, colors), position(row2, column2, color2, colors)] = seen
    return field


def small(gated, colors):
    return PixelCNN(levels=3, color_channels=colors, features=12, depth=1 if gated else 2, kernel_size=3,
                    first_kernel_size=3, output_features=12, gated=gated)


@pytest.mark.parametrize("colors", [1, 3])
def test_gated_pixelcnn_sees_exactly_its_receptive_field_and_nothing_after(colors):
    """The first layer (k₀ = 3) and one more (k = 3) reach 2 columns each way and 3 rows up: every
    earlier sub-pixel there has a non-zero derivative (no blind spot), everything else exactly 0."""
    depends = dependencies(small(True, colors), colors)
    assert_causal(depends)
    np.testing.assert_array_equal(depends, gated_receptive_field(colors, reach=2))


@pytest.mark.parametrize("colors", [1, 3])
def test_plain_pixelcnn_is_causal_and_has_a_blind_spot(colors):
    """Nominally the 3×3 mask-A layer and two blocks of 3×3 mask-B convolutions reach 3 rows up and 3
    columns each way, but going right costs a row up: x[3, 2] is hidden from the logits at (4, 0),
    which the gated model (with less reach) sees."""
    depends = dependencies(small(False, colors), colors)
    assert_causal(depends)
    target, hidden = position(4, 0, 0, colors), position(3, 2, 0, colors)
    assert not depends[target, hidden]
    assert dependencies(small(True, colors), colors)[target, hidden]
    # ... while the plain model sees the earlier sub-pixels of its cone
    assert depends[target, position(3, 1, 0, colors)] and depends[target, position(1, 3, 0, colors)]
    if colors == 3:  # within the pixel: B sees R and G, R sees neither
        assert depends[position(2, 2, 2, colors), position(2, 2, 0, colors)]
        assert depends[position(2, 2, 2, colors), position(2, 2, 1, colors)]


def test_level_input_and_logits_contract():
    values = jnp.array([[[[0], [16]], [[8], [4]]]])
    np.testing.assert_allclose(level_input(values, 17)[0, ..., 0], [[0.0, 1.0], [0.5, 0.25]])
    model = autoregressive.get_model("gated_pixelcnn", 17, 1, features=12, depth=1, output_features=12)
    logits = model.apply(model.init(jax.random.PRNGKey(0), level_input(values, 17)), level_input(values, 17))
    assert logits.shape == (1, 2, 2, 1, 17) and logits.dtype == jnp.float32
    # the first sub-pixel sees nothing: its logits are the same for every image
    other = model.apply(model.init(jax.random.PRNGKey(0), level_input(values, 17)), jnp.ones((1, 2, 2, 1)))
    np.testing.assert_array_equal(logits[0, 0, 0], other[0, 0, 0])
    assert not np.array_equal(logits[0, 1, 1], other[0, 1, 1])


@pytest.mark.parametrize("name, options, message", [
    ("pixelcnn", {"heads": 2}, "model 'pixelcnn' has no option 'heads'"),
    ("gated_pixelcnn", {"features": 8}, "features=8 is not divisible by the 3 colour channels"),
    ("row_lstm", {"features": 4}, "features=4 is not divisible by the 3 colour channels"),
    ("pixelsnail", {}, "unknown model 'pixelsnail'"),
])
def test_get_model_refuses_bad_names_and_options(name, options, message):
    with pytest.raises(UserError, match=message):
        autoregressive.get_model(name, 256, 3, **options)
