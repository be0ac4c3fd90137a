"""MobileNet v1 and v2: depthwise separable and inverted residual blocks and whole networks against
float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.models import common, get_model, mobilenet

from tests.models.references import (assert_forward_close, conv_bn_ref, dense_ref, global_avg_pool_ref,
                                     random_images, random_variables, relu6, sub)

CONV = common.conv_def("xla", jnp.float32)
NORM = common.norm_def(False, jnp.float32)


def test_depthwise_separable_block_matches_numpy():
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 4)).astype(np.float32)
    dw = mobilenet.ConvBNReLU6(4, 3, CONV, NORM, stride=2, depthwise=True)
    pw = mobilenet.ConvBNReLU6(6, 1, CONV, NORM)
    dv = random_variables(dw, x)
    assert dv["params"]["conv"]["kernel"].shape == (3, 3, 1, 4)  # one 3×3 filter per channel
    y = dw.apply(dv, x)
    pv = random_variables(pw, y, seed=1)
    want = conv_bn_ref(conv_bn_ref(x, dv, 2, 1, groups=4, act=relu6), pv, act=relu6)
    np.testing.assert_allclose(pw.apply(pv, y), want, rtol=1e-4, atol=1e-5)


def inverted_residual_ref(x, variables, stride, expand_ratio):
    """1×1 expansion (×t, ReLU6; none for t = 1), depthwise 3×3 (stride, ReLU6), linear 1×1 projection;
    plus x when the stride is 1 and the channels match."""
    v = lambda name: sub(variables, name)  # noqa: E731
    y = conv_bn_ref(x, v("expand"), act=relu6) if expand_ratio != 1 else x
    y = conv_bn_ref(y, v("depthwise"), stride, padding=1, groups=y.shape[-1], act=relu6)
    y = conv_bn_ref(y, v("project"), act=None)
    return x + y if stride == 1 and y.shape == x.shape else y


def test_inverted_residual_matches_numpy():
    block = mobilenet.InvertedResidual(4, 1, 6, CONV, NORM)
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 4)).astype(np.float32)
    variables = random_variables(block, x)
    assert variables["params"]["expand"]["conv"]["kernel"].shape == (1, 1, 4, 24)
    np.testing.assert_allclose(block.apply(variables, x), inverted_residual_ref(x, variables, 1, 6),
                               rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module", params=["mobilenet_v1", "mobilenet_v2"])
def small_mobilenet(request):
    """Width multiplier 1/4 on 32×32, He-scaled kernels (the input still matters after 13+ blocks)."""
    x = random_images(2, 32, seed=7)
    return request.param, x, random_variables(get_model(request.param, num_classes=5, width_mult=0.25), x, gain=2.0)


def test_mobilenets_small_forward(small_mobilenet):
    name, x, variables = small_mobilenet  # the encoder ignores the classifier's parameters
    model = get_model(name, num_classes=None, width_mult=0.25)
    assert jax.jit(model.apply)(variables, x).shape == (2, {"mobilenet_v1": 256, "mobilenet_v2": 1280}[name])


# MobileNet v1 (paper Table 1): the 13 depthwise separable blocks' (output channels, stride).
V1 = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
# MobileNetV2 (paper Table 2): expansion t, channels c, repeats n, first stride s.
V2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def mobilenet_v1_ref(variables, x, width_mult):
    """3×3/2 conv (32·α, BN, ReLU6), then 13 × (depthwise 3×3, BN, ReLU6, 1×1 conv, BN, ReLU6), average
    pool, classifier. Channels α·c (α = 1/4 here: exact multiples of 8)."""
    v = lambda name: sub(variables, name)  # noqa: E731
    y = conv_bn_ref(x, v("stem"), 2, 1, act=relu6)
    for index, (channels, stride) in enumerate(V1):
        y = conv_bn_ref(y, v(f"block{index + 1}_dw"), stride, 1, groups=y.shape[-1], act=relu6)
        y = conv_bn_ref(y, v(f"block{index + 1}_pw"), act=relu6)
        assert y.shape[-1] == channels * width_mult
    return dense_ref(global_avg_pool_ref(y), variables["params"]["head"])


def mobilenet_v2_ref(variables, x, width_mult):
    """3×3/2 conv (BN, ReLU6), the inverted residual blocks of Table 2, 1×1 conv to 1280 (BN, ReLU6),
    average pool, classifier."""
    v = lambda name: sub(variables, name)  # noqa: E731
    y = conv_bn_ref(x, v("stem"), 2, 1, act=relu6)
    for stage, (t, c, n, s) in enumerate(V2):
        for index in range(n):
            y = inverted_residual_ref(y, v(f"block{stage + 1}_{index + 1}"), s if index == 0 else 1, t)
            assert y.shape[-1] == max(8, c * width_mult)  # rounded to a multiple of 8, at least 8
    y = conv_bn_ref(y, v("last_conv"), act=relu6)
    assert y.shape[-1] == 1280
    return dense_ref(global_avg_pool_ref(y), variables["params"]["head"])


def test_mobilenet_matches_numpy_end_to_end(small_mobilenet):
    name, x, variables = small_mobilenet
    model = get_model(name, num_classes=5, width_mult=0.25)
    reference = mobilenet_v1_ref if name == "mobilenet_v1" else mobilenet_v2_ref
    assert_forward_close(jax.jit(model.apply)(variables, x), reference(variables, x, 0.25))
