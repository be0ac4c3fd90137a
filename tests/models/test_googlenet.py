"""GoogLeNet: the Inception module and the whole network against float64 NumPy, layer sizes at 224."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.models import common, get_model, googlenet

from tests.models.references import (assert_forward_close, conv_bn_ref, dense_ref, global_avg_pool_ref,
                                     pool_ref, random_images, random_variables, shapes_at_full_size, sub)

CONV = common.conv_def("xla", jnp.float32)
NORM = common.norm_def(False, jnp.float32)


def inception_ref(x, variables):
    """1×1 | 1×1 → 3×3 | 1×1 → 3×3 (torchvision's "5×5") | 3×3/1 max-pool (ceil mode) → 1×1, concatenated."""
    v = lambda name: sub(variables, name)  # noqa: E731
    branch1 = conv_bn_ref(x, v("branch1"))
    branch2 = conv_bn_ref(conv_bn_ref(x, v("branch2_a")), v("branch2_b"), padding=1)
    branch3 = conv_bn_ref(conv_bn_ref(x, v("branch3_a")), v("branch3_b"), padding=1)
    branch4 = conv_bn_ref(pool_ref(x, 3, 1, 1, "max", ceil_mode=True), v("branch4"))
    return np.concatenate([branch1, branch2, branch3, branch4], axis=-1)


def test_inception_module_matches_numpy():
    module = googlenet.Inception(2, 3, 4, 2, 3, 2, conv=CONV, norm=NORM)
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 6)).astype(np.float32)
    variables = random_variables(module, x)
    np.testing.assert_allclose(module.apply(variables, x), inception_ref(x, variables), rtol=1e-4, atol=1e-5)


def googlenet_ref(variables, x):
    """torchvision's GoogLeNet without the auxiliary classifiers: 7×7/2 conv, 3×3/2 max-pool, 1×1 and
    3×3 convs, 3×3/2 max-pool, Inception 3a 3b, 3×3/2 max-pool, 4a–4e, 2×2/2 max-pool, 5a 5b (every
    pool in ceil mode, every conv followed by BatchNorm and ReLU), global average pool, classifier."""
    v = lambda name: sub(variables, name)  # noqa: E731
    y = conv_bn_ref(x, v("conv1"), stride=2, padding=3)
    y = pool_ref(y, 3, 2, ceil_mode=True)
    y = conv_bn_ref(conv_bn_ref(y, v("conv2")), v("conv3"), padding=1)
    y = pool_ref(y, 3, 2, ceil_mode=True)
    for stage in ("3ab", "4abcde", "5ab"):
        for letter in stage[1:]:
            y = inception_ref(y, v(f"inception{stage[0]}{letter}"))
        if stage != "5ab":
            y = pool_ref(y, 3 if stage == "3ab" else 2, 2, ceil_mode=True)
    return dense_ref(global_avg_pool_ref(y), variables["params"]["head"])


@pytest.fixture(scope="module")
def small_googlenet():
    """Width 1/8 on 48×48: conv1 -> 24, then every pool's ceil mode matters: -> 12 -> 6 (3a, 3b) -> 3
    (4a-4e) -> 2 (5a, 5b) where floor mode would give 11, 5, 2, 1."""
    x = random_images(2, 48, seed=4)
    return x, random_variables(get_model("googlenet", num_classes=5, width_mult=1 / 8), x)


def test_googlenet_matches_numpy_end_to_end(small_googlenet):
    x, variables = small_googlenet
    model = get_model("googlenet", num_classes=5, width_mult=1 / 8)
    assert_forward_close(jax.jit(model.apply)(variables, x), googlenet_ref(variables, x))


def test_googlenet_sizes_and_small_forward(small_googlenet):
    sizes = shapes_at_full_size("googlenet", "inception3a", "inception4a", "inception4e", "inception5b")
    assert sizes == [(1, 28, 28, 256), (1, 14, 14, 512), (1, 14, 14, 832), (1, 7, 7, 1024)]
    x, variables = small_googlenet  # the encoder ignores the classifier's parameters
    model = get_model("googlenet", num_classes=None, width_mult=1 / 8)
    assert jax.jit(model.apply)(variables, x).shape == (2, 128)
