"""visionax.models.common: pooling against PyTorch's definitions, channel rounding, and the layers every
model is built from (the hand-written BatchNorm, dropout and fan-out Kaiming init)."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.layers import norm, regularize
from visionax.models import common

from tests.models.references import (bn_ref, conv2d_ref, modules_used, pool_ref, random_variables, relu,
                                     squeeze_excite_ref)


@pytest.mark.parametrize("size,window,stride,padding,ceil", [
    (112, 3, 2, 0, True), (14, 2, 2, 0, True), (9, 3, 1, 1, True), (7, 3, 2, 1, False), (10, 3, 2, 0, True),
])
def test_max_pool_matches_pytorch_ceil_and_padding(size, window, stride, padding, ceil):
    x = np.random.default_rng(0).normal(size=(2, size, size, 3))
    got = common.max_pool(jnp.asarray(x, jnp.float32), window, stride, padding, ceil_mode=ceil)
    np.testing.assert_allclose(got, pool_ref(x, window, stride, padding, "max", ceil), rtol=1e-6)


def test_avg_pool_without_padding_counts_and_adaptive_pool():
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3))
    got = common.avg_pool(jnp.asarray(x, jnp.float32), 3, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(got, pool_ref(x, 3, 2, 1, "avg", count_include_pad=False),
                               rtol=1e-5, atol=1e-7)
    # AdaptiveAvgPool2d(3) on 7×7: bins [0,3), [2,5), [4,7) (floor(i·7/3) to ceil((i+1)·7/3)).
    got = common.adaptive_avg_pool(jnp.asarray(x, jnp.float32), 3)
    bins = [(0, 3), (2, 5), (4, 7)]
    want = np.stack([np.stack([x[:, a:b, c:d].mean(axis=(1, 2)) for c, d in bins], 1) for a, b in bins], 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_make_divisible_matches_torchvision():
    assert [common.make_divisible(v) for v in (32, 35.2, 17.6, 1280 * 1.1, 24 * 0.35, 3)] == [
        32, 32, 16, 1408, 8, 8]


def test_conv_bn_act_and_squeeze_excite_match_numpy():
    x = np.random.default_rng(1).normal(size=(2, 6, 6, 4)).astype(np.float32)
    layer = common.ConvBNAct(6, 3, common.conv_def("xla", jnp.float32), common.norm_def(False, jnp.float32),
                             stride=2)
    variables = random_variables(layer, x)
    p, s = variables["params"], variables["batch_stats"]
    want = relu(bn_ref(conv2d_ref(x, p["conv"]["kernel"], 2, 1), s["bn"], p["bn"]))
    np.testing.assert_allclose(layer.apply(variables, x), want, rtol=1e-4, atol=1e-5)
    se = common.SqueezeExcite(2)
    variables = random_variables(se, x)
    np.testing.assert_allclose(se.apply(variables, x), squeeze_excite_ref(x, variables["params"]),
                               rtol=1e-4, atol=1e-5)


# --- the course's hand-written layers in every model ---------------------------------------------------

@pytest.mark.parametrize("splits", [1, 2])
def test_norm_def_is_the_hand_written_batch_norm_with_flaxs_numbers(splits):
    """norm_def builds `visionax.layers.norm.BatchNorm` (momentum 0.9, ε = 1e-5, flax's variable names),
    which in training and evaluation gives the numbers of flax's `nn.BatchNorm` with the same options
    (per slice of batch/splits examples when split)."""
    x = jax.random.normal(jax.random.key(0), (8, 3, 3, 5)) * 2 + 1
    layer, eval_layer = common.norm_def(True, jnp.float32, splits=splits)(), common.norm_def(False, jnp.float32)()
    assert type(layer) is norm.BatchNorm and layer.num_splits == splits
    assert (layer.momentum, layer.epsilon) == (0.9, 1e-5)
    variables = random_variables(layer, x)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"scale": (5,), "bias": (5,)},
                                                  "batch_stats": {"mean": (5,), "var": (5,)}}
    flax_bn = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
    y, updates = layer.apply(variables, x, mutable=["batch_stats"])
    parts = [flax_bn.apply(variables, part, use_running_average=False, mutable=["batch_stats"])
             for part in jnp.split(x, splits)]
    np.testing.assert_allclose(y, jnp.concatenate([part[0] for part in parts]), rtol=1e-5, atol=1e-5)
    expected = jax.tree.map(lambda *leaves: np.mean(leaves, axis=0), *[part[1] for part in parts])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), updates, expected)
    np.testing.assert_allclose(eval_layer.apply(variables, x), flax_bn.apply(variables, x, use_running_average=True),
                               rtol=1e-5, atol=1e-5)


def test_conv_kernel_init_is_kaimings_fan_out():
    """torchvision's kaiming_normal_(mode="fan_out"): std √(2 / (kh·kw·c_out)), the draws of flax's
    variance_scaling(2, "fan_out", "normal")."""
    key = jax.random.key(3)
    for shape in ((3, 3, 16, 64), (3, 3, 1, 32), (1, 1, 64, 256)):  # plain, depthwise, pointwise
        np.testing.assert_allclose(common.conv_kernel_init(key, shape),
                                   nn.initializers.variance_scaling(2.0, "fan_out", "normal")(key, shape),
                                   rtol=1e-6)
    conv = common.conv_def("xla", jnp.float32)(128, (3, 3))
    kernel = conv.init(jax.random.key(0), jnp.ones((1, 8, 8, 64)))["params"]["kernel"]
    std = math.sqrt(2 / (3 * 3 * 128))  # fan-out; the fan-in 3·3·64 would give a √2 larger std
    assert abs(float(jnp.std(kernel)) - std) < 5 * std / math.sqrt(2 * kernel.size)


def test_classifier_dropout_is_the_hand_written_layer():
    class Head(nn.Module):
        @nn.compact
        def __call__(self, x, train):
            return common.classify(x, 4, jnp.float32, train, dropout=0.5)

    x = jnp.ones((64, 32))
    head = Head()
    variables = head.init(jax.random.key(0), x, False)
    assert modules_used(head, variables, x, train=True, rngs={"dropout": jax.random.key(1)}).count(
        regularize.Dropout) == 1
    _, state = head.apply(variables, x, True, rngs={"dropout": jax.random.key(1)},
                          capture_intermediates=True, mutable=["intermediates"])
    dropped = np.asarray(state["intermediates"]["Dropout_0"]["__call__"][0])
    assert set(np.unique(dropped)) == {0.0, 2.0}  # kept units scaled by 1 / (1 − 0.5)
    kernel, bias = variables["params"]["head"]["kernel"], variables["params"]["head"]["bias"]
    np.testing.assert_allclose(head.apply(variables, x, True, rngs={"dropout": jax.random.key(1)}),
                               dropped @ kernel + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(head.apply(variables, x, False), x @ kernel + bias, rtol=1e-5, atol=1e-5)
