"""EfficientNet: compound scaling, MBConv and the whole network against float64 NumPy, stochastic depth."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.models import common, efficientnet, input_size

from tests.models.references import (assert_forward_close, conv_bn_ref, dense_ref, global_avg_pool_ref,
                                     random_images, random_variables, sigmoid, silu, squeeze_excite_ref, sub)

CONV = common.conv_def("xla", jnp.float32)
NORM = common.norm_def(False, jnp.float32)


def test_compound_scaling_rule_gives_every_variant():
    # B7 = B0 with channels ×2.0 and repeats ×3.1 (rounded up); its resolution is 600.
    b7 = efficientnet.scale_stages(2.0, 3.1)
    assert [stage[4] for stage in b7] == [32, 48, 80, 160, 224, 384, 640]
    assert [stage[5] for stage in b7] == [4, 7, 7, 10, 10, 13, 4]
    assert input_size("efficientnet_b7") == 600
    widths, depths, sizes = zip(*[c[:3] for c in efficientnet.COEFFICIENTS.values()])
    assert list(widths) == sorted(widths) and list(depths) == sorted(depths) and list(sizes) == sorted(sizes)


def mbconv_ref(x, variables, kernel, stride, expand_ratio):
    """1×1 expansion to make_divisible(t·c_in) (SiLU; none for t = 1), depthwise k×k (stride, SiLU),
    squeeze-excite to max(1, c_in/4) (SiLU, sigmoid gate), linear 1×1 projection; plus x when the stride
    is 1 and the channels match (evaluation: stochastic depth keeps every branch)."""
    v = lambda name: sub(variables, name)  # noqa: E731
    expanded = round_filters(x.shape[-1] * expand_ratio)
    y = conv_bn_ref(x, v("expand"), act=silu) if expanded != x.shape[-1] else x
    assert y.shape[-1] == expanded
    y = conv_bn_ref(y, v("depthwise"), stride, kernel // 2, groups=expanded, act=silu)
    se = variables["params"]["se"]
    assert se["fc1"]["kernel"].shape == (expanded, max(1, x.shape[-1] // 4))
    y = conv_bn_ref(squeeze_excite_ref(y, se, act=silu), v("project"), act=None)
    return x + y if stride == 1 and y.shape == x.shape else y


def test_mbconv_matches_numpy():
    block = efficientnet.MBConv(8, 5, 1, 6, 0.0, CONV, NORM)
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 8)).astype(np.float32)
    variables = random_variables(block, x, train=False)
    v = lambda name: sub(variables, name)  # noqa: E731
    y = conv_bn_ref(x, v("expand"), act=silu)                                   # 8 -> 48
    y = conv_bn_ref(y, v("depthwise"), padding=2, groups=48, act=silu)
    se = variables["params"]["se"]
    assert se["fc1"]["kernel"].shape == (48, 2)                                 # squeeze to in/4 = 2
    hidden = silu(y.mean(axis=(1, 2)) @ se["fc1"]["kernel"] + se["fc1"]["bias"])
    y = y * sigmoid(hidden @ se["fc2"]["kernel"] + se["fc2"]["bias"])[:, None, None]
    y = conv_bn_ref(y, v("project"), act=None)
    np.testing.assert_allclose(block.apply(variables, x, train=False), x + y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(block.apply(variables, x, train=False), mbconv_ref(x, variables, 5, 1, 6),
                               rtol=1e-4, atol=1e-5)


# EfficientNet-B0 (paper Table 1): MBConv expansion, kernel, first stride, output channels, repeats.
B0 = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
      (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]


def round_filters(channels):
    """Channels to the nearest multiple of 8, at least 8 and at least 90% of `channels` (the TF reference)."""
    rounded = max(8, int(channels + 4) // 8 * 8)
    return rounded + 8 if rounded < 0.9 * channels else rounded


def efficientnet_ref(variables, x, width, depth):
    """3×3/2 stem conv to 32·w (BN, SiLU); B0's stages with channels × w (`round_filters`) and repeats
    × d (rounded up), the first block of a stage strided; 1×1 conv to 4× the last channels (BN, SiLU);
    average pool; classifier."""
    v = lambda name: sub(variables, name)  # noqa: E731
    y = conv_bn_ref(x, v("stem"), 2, 1, act=silu)
    assert y.shape[-1] == round_filters(32 * width)
    for stage, (t, k, s, c, n) in enumerate(B0):
        for repeat in range(math.ceil(n * depth)):
            y = mbconv_ref(y, v(f"stage{stage + 1}_{repeat + 1}"), k, s if repeat == 0 else 1, t)
            assert y.shape[-1] == round_filters(c * width)
    y = conv_bn_ref(y, v("head_conv"), act=silu)
    assert y.shape[-1] == 4 * round_filters(320 * width)
    return dense_ref(global_avg_pool_ref(y), variables["params"]["head"])


SMALL = dict(width_mult=0.25, depth_mult=0.5, num_classes=5)


@pytest.fixture(scope="module")
def small_efficientnet():
    """Width 1/4 (channels 8, 8, 8, 16, 24, 32, 48, 80), depth 1/2 (10 blocks), 32×32 images. Kernels
    ~ N(0, 2.5/fan_in): SiLU and the SE gates shrink the signal more than ReLU does; with this gain it
    neither vanishes (the logits would not depend on the image) nor blows up."""
    x = random_images(2, 32, seed=8)
    return x, random_variables(efficientnet.EfficientNet(**SMALL), x, gain=2.5)


def test_efficientnet_matches_numpy_end_to_end(small_efficientnet):
    x, variables = small_efficientnet
    model = efficientnet.EfficientNet(**SMALL)
    assert_forward_close(jax.jit(model.apply)(variables, x), efficientnet_ref(variables, x, 0.25, 0.5))


def test_stochastic_depth_drops_whole_residual_branches():
    block = efficientnet.MBConv(4, 3, 1, 1, 0.5, CONV, common.norm_def(True, jnp.float32))
    x = np.random.default_rng(7).normal(size=(64, 4, 4, 4)).astype(np.float32)
    variables = random_variables(block, x, train=True)
    eval_block = efficientnet.MBConv(4, 3, 1, 1, 0.0, CONV, common.norm_def(True, jnp.float32))
    branch = eval_block.apply(variables, x, train=True, mutable=["batch_stats"])[0] - x
    out, _ = block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)},
                         mutable=["batch_stats"])
    kept = np.all(np.isclose(out, x + 2 * branch, atol=1e-5), axis=(1, 2, 3))
    dropped = np.all(np.isclose(out, x, atol=1e-6), axis=(1, 2, 3))
    assert np.all(kept ^ dropped) and 16 < kept.sum() < 48  # each sample: all or nothing, p = 0.5


def test_efficientnet_small_forward_trains_with_dropout_key(small_efficientnet):
    x, variables = small_efficientnet
    model = efficientnet.EfficientNet(**SMALL)
    train_step = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key},
                                                       mutable=["batch_stats"]))
    logits, updates = train_step(variables, x, jax.random.key(0))
    assert logits.shape == (2, 5) and set(updates) == {"batch_stats"}
    # Stochastic depth and the classifier's dropout draw from the "dropout" stream: other keys, other logits.
    assert not np.allclose(logits, train_step(variables, x, jax.random.key(1))[0])
