"""DenseNet: the dense layer and whole networks against float64 NumPy, growth and transitions at 224."""

import jax
import jax.numpy as jnp
import numpy as np

from visionax.models import common, densenet

from tests.models.references import (assert_forward_close, bn_ref, conv2d_ref, dense_ref, global_avg_pool_ref,
                                     pool_ref, random_images, random_variables, relu, shapes_at_full_size, sub)

CONV = common.conv_def("xla", jnp.float32)
NORM = common.norm_def(False, jnp.float32)


def dense_layer_ref(x, variables):
    """BN – ReLU – 1×1 conv – BN – ReLU – 3×3 conv (padding 1); the new features concatenated to x."""
    p, s = variables["params"], variables["batch_stats"]
    y = conv2d_ref(relu(bn_ref(x, s["norm1"], p["norm1"])), p["conv1"]["kernel"])
    y = conv2d_ref(relu(bn_ref(y, s["norm2"], p["norm2"])), p["conv2"]["kernel"], padding=1)
    return np.concatenate([x, y], axis=-1)


def test_dense_layer_concatenates_its_new_features_to_its_input():
    layer = densenet.DenseLayer(growth_rate=3, bn_size=2, drop_rate=0.0, conv=CONV, norm=NORM)
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 5)).astype(np.float32)
    variables = random_variables(layer, x, train=False)
    out = layer.apply(variables, x, train=False)
    np.testing.assert_array_equal(out[..., :5], x)
    np.testing.assert_allclose(out[..., 5:], dense_layer_ref(x, variables)[..., 5:], rtol=1e-4, atol=1e-5)


def densenet_ref(variables, x, block_config):
    """torchvision's DenseNet: 7×7/2 conv, BN, ReLU, 3×3/2 max-pool (padding 1); dense blocks with
    transitions (BN, ReLU, 1×1 conv to half the channels, 2×2/2 average pool) between them; BN, ReLU,
    global average pool, classifier."""
    v = lambda name: sub(variables, name)  # noqa: E731
    p, s = variables["params"], variables["batch_stats"]
    y = conv2d_ref(x, p["conv0"]["kernel"], stride=2, padding=3)
    y = pool_ref(relu(bn_ref(y, s["norm0"], p["norm0"])), 3, 2, padding=1)
    for block, layers in enumerate(block_config):
        for layer in range(layers):
            y = dense_layer_ref(y, v(f"block{block + 1}_layer{layer + 1}"))
        if block < len(block_config) - 1:
            name = f"transition{block + 1}"
            y = relu(bn_ref(y, s[f"{name}_norm"], p[f"{name}_norm"]))
            kernel = p[f"{name}_conv"]["kernel"]
            assert kernel.shape[-1] == y.shape[-1] // 2
            y = pool_ref(conv2d_ref(y, kernel), 2, 2, kind="avg")
    y = relu(bn_ref(y, s["norm5"], p["norm5"]))
    return dense_ref(global_avg_pool_ref(y), p["head"])


def test_densenet_matches_numpy_end_to_end():
    # DenseNet-121's layout with 3, 2, 2, 2 layers per block (DenseNet-121's 58 take 7 s to compile),
    # growth 4, on 32×32: 8 -> 4 -> 2 -> 1 through the transitions.
    model = densenet.DenseNet(block_config=(3, 2, 2, 2), num_classes=5, growth_rate=4, num_init_features=8,
                              bn_size=2)
    x = random_images(2, 32, seed=6)
    variables = random_variables(model, x)
    assert_forward_close(jax.jit(model.apply)(variables, x), densenet_ref(variables, x, (3, 2, 2, 2)))


def test_densenet121_grows_by_growth_rate_and_halves_at_transitions():
    # Full size: 64 + 6·32 = 256 -> 128 -> +12·32 = 512 -> 256 -> +24·32 = 1024 -> 512 -> +16·32 = 1024.
    layers = ["block1_layer6", "block2_layer12", "block3_layer24", "block4_layer16"]
    assert [s[-1] for s in shapes_at_full_size("densenet121", *layers)] == [256, 512, 1024, 1024]
    # Small and fast: two layers per block, growth 4: 8 + 8 -> 8 + 8 -> 8 + 8 -> 8 + 8 = 16 features.
    model = densenet.DenseNet(block_config=(2, 2, 2, 2), num_classes=None, growth_rate=4,
                              num_init_features=8)
    x = jnp.ones((1, 32, 32, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, 16)


def test_drop_rate_is_dropout_after_each_new_layer_in_training_only():
    layer = densenet.DenseLayer(growth_rate=64, bn_size=1, drop_rate=0.5, conv=CONV,
                                norm=common.norm_def(False, jnp.float32))
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 3)).astype(np.float32)
    variables = random_variables(layer, x, train=False)
    new = dense_layer_ref(x, variables)[..., 3:]
    np.testing.assert_allclose(layer.apply(variables, x, train=False)[..., 3:], new, rtol=1e-4, atol=1e-5)
    out = np.asarray(layer.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)})[..., 3:])
    dropped = out == 0
    assert 0.4 < dropped.mean() < 0.6  # 2048 units, p = 0.5
    np.testing.assert_allclose(out[~dropped], 2 * new[~dropped], rtol=1e-4, atol=1e-5)  # kept ones × 1/(1 − p)
