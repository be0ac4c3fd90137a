"""VGG: only 3×3 convolutions, and whole forward passes against float64 NumPy."""

import jax
import jax.numpy as jnp
import pytest

from visionax.models import get_model

from tests.models.references import (adaptive_avg_pool_ref, assert_forward_close, conv2d_ref, dense_ref,
                                     pool_ref, random_images, random_variables, relu)

# Convolutions per block (paper Table 1: configurations D and E); every block ends in a 2×2 max-pool.
BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}


@pytest.mark.parametrize("name,convs", [("vgg16", 13), ("vgg19", 16)])
def test_vgg_is_only_3x3_convolutions(name, convs):
    params = jax.eval_shape(get_model(name).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    kernels = [params[f"conv{i}"]["kernel"].shape for i in range(1, convs + 1)]
    assert all(shape[:2] == (3, 3) for shape in kernels) and f"conv{convs + 1}" not in params
    assert params["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)
    # Small and fast: width 1/16 on 32×32 images (the 1×1 map is spread to 7×7 by the adaptive pool).
    model = get_model(name, num_classes=3, width_mult=1 / 16)
    x = jnp.ones((1, 32, 32, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, 3)


def vgg_ref(variables, x, blocks):
    """VGG in NumPy: blocks of 3×3 convolutions (stride 1, padding 1, bias, ReLU), each followed by a
    2×2/2 max-pool; an adaptive average pool to 7×7; fc6, fc7 (ReLU) and the classifier."""
    p = variables["params"]
    y, index = x, 0
    for repeats in blocks:
        for _ in range(repeats):
            index += 1
            y = relu(conv2d_ref(y, p[f"conv{index}"]["kernel"], 1, 1, bias=p[f"conv{index}"]["bias"]))
        y = pool_ref(y, 2, 2)
    y = adaptive_avg_pool_ref(y, 7).reshape(len(x), -1)
    y = relu(dense_ref(relu(dense_ref(y, p["fc6"])), p["fc7"]))
    return dense_ref(y, p["head"])


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_vgg_matches_numpy_end_to_end(name):
    # 64×64 at width 1/16: five pools leave 2×2, which the adaptive pool spreads to 7×7.
    model = get_model(name, num_classes=5, width_mult=1 / 16)
    x = random_images(2, 64, seed=3)
    variables = random_variables(model, x, gain=2.0)
    assert_forward_close(jax.jit(model.apply)(variables, x), vgg_ref(variables, x, BLOCKS[name]))
