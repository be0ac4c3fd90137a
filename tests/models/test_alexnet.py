"""AlexNet and ZFNet: whole forward passes against float64 NumPy, ZFNet's layer sizes at full resolution."""

import jax
import jax.numpy as jnp
import numpy as np

from visionax.models import get_model

from tests.models.references import (adaptive_avg_pool_ref, assert_forward_close, conv2d_ref, dense_ref,
                                     pool_ref, random_images, random_variables, relu, shapes_at_full_size)


def test_alexnet_matches_numpy_end_to_end():
    model = get_model("alexnet", num_classes=5, width_mult=1 / 16)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    variables = random_variables(model, x)
    p = variables["params"]
    y = relu(conv2d_ref(x, p["conv1"]["kernel"], 4, 2, bias=p["conv1"]["bias"]))  # 64 -> 15
    y = pool_ref(y, 3, 2)                                                            # -> 7
    y = pool_ref(relu(conv2d_ref(y, p["conv2"]["kernel"], 1, 2, bias=p["conv2"]["bias"])), 3, 2)  # -> 3
    for name in ("conv3", "conv4", "conv5"):
        y = relu(conv2d_ref(y, p[name]["kernel"], 1, 1, bias=p[name]["bias"]))
    y = pool_ref(y, 3, 2)                                                            # -> 1
    y = np.repeat(np.repeat(y, 6, axis=1), 6, axis=2).reshape(2, -1)                # adaptive pool to 6×6
    for name in ("fc6", "fc7"):
        y = relu(y @ p[name]["kernel"] + p[name]["bias"])
    want = y @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model.apply(variables, x), want, rtol=1e-4, atol=1e-5)
    # Dropout is active only in training, and then needs its key.
    train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)})
    assert not np.allclose(train, want, atol=1e-4)


def zfnet_ref(variables, x):
    """ZFNet (paper Fig. 3, torchvision-style classifier) in NumPy: 7×7/2 conv (padding 1), 3×3/2 max-pool
    (padding 1), 5×5/2 conv, 3×3/2 max-pool (padding 1), three 3×3 convs, 3×3/2 max-pool, an adaptive
    average pool to 6×6, fc6, fc7 (ReLU) and the classifier."""
    p = variables["params"]
    conv = lambda y, name, stride, padding: relu(conv2d_ref(y, p[name]["kernel"], stride, padding,  # noqa: E731
                                                            bias=p[name]["bias"]))
    y = pool_ref(conv(x, "conv1", 2, 1), 3, 2, padding=1)
    y = pool_ref(conv(y, "conv2", 2, 0), 3, 2, padding=1)
    for name in ("conv3", "conv4", "conv5"):
        y = conv(y, name, 1, 1)
    y = adaptive_avg_pool_ref(pool_ref(y, 3, 2), 6).reshape(len(x), -1)
    y = relu(dense_ref(relu(dense_ref(y, p["fc6"])), p["fc7"]))
    return dense_ref(y, p["head"])


def test_zfnet_matches_numpy_end_to_end():
    # 96×96: conv1 -> 46, pool -> 23, conv2 -> 10, pool -> 5, conv3..5 -> 5, pool -> 2, adaptive -> 6.
    model = get_model("zfnet", num_classes=5, width_mult=1 / 16)
    x = random_images(2, 96, seed=2)
    variables = random_variables(model, x, gain=2.0)
    assert_forward_close(jax.jit(model.apply)(variables, x), zfnet_ref(variables, x))


def test_zfnet_layer_sizes_are_the_papers():
    # Fig. 3: 110×110×96 after conv1, 26×26×256 after conv2, 13×13 for conv3..5, 6×6 after the pool.
    conv1, conv2, conv5 = shapes_at_full_size("zfnet", "conv1", "conv2", "conv5")
    assert conv1 == (1, 110, 110, 96) and conv2 == (1, 26, 26, 256) and conv5 == (1, 13, 13, 256)
    assert jax.eval_shape(get_model("zfnet").init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))["params"]["fc6"]["kernel"].shape == (6 * 6 * 256, 4096)
