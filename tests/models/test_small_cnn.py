"""SmallCNN: the whole network against float64 NumPy, its BatchNorm in training."""

import jax
import numpy as np

from visionax.layers import norm
from visionax.models import get_model

from tests.models.references import (assert_forward_close, bn_ref, conv2d_ref, dense_ref, modules_used,
                                     pool_ref, random_images, random_variables, relu)


def small_cnn_ref(variables, x):
    """Three times 3×3 conv (padding 1, no bias) – BN – ReLU, a 2×2/2 max-pool after the second; the
    spatial mean; the dense classifier "head"."""
    p, s = variables["params"], variables["batch_stats"]
    y = x
    for index in range(3):
        y = conv2d_ref(y, p[f"Conv_{index}"]["kernel"], padding=1)
        y = relu(bn_ref(y, s[f"BatchNorm_{index}"], p[f"BatchNorm_{index}"]))
        if index == 1:
            y = pool_ref(y, 2, 2)
    return dense_ref(y.mean(axis=(1, 2)), p["head"])


def test_small_cnn_matches_numpy_end_to_end():
    model = get_model("small_cnn", num_classes=5, widths=(4, 8, 16))
    x = random_images(2, 8, seed=10)
    variables = random_variables(model, x)
    assert_forward_close(jax.jit(model.apply)(variables, x), small_cnn_ref(variables, x))


def test_small_cnn_trains_with_batch_statistics_of_the_hand_written_layer():
    model = get_model("small_cnn", num_classes=5, widths=(4, 8, 16))
    x = random_images(16, 8, seed=11)
    variables = random_variables(model, x)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = conv2d_ref(x, variables["params"]["Conv_0"]["kernel"], padding=1)
    old = variables["batch_stats"]["BatchNorm_0"]
    np.testing.assert_allclose(updates["batch_stats"]["BatchNorm_0"]["mean"],
                               0.9 * old["mean"] + 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(updates["batch_stats"]["BatchNorm_0"]["var"],
                               0.9 * old["var"] + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-5, atol=1e-6)
    used = modules_used(model, variables, x, train=True, mutable=["batch_stats"])
    assert used.count(norm.BatchNorm) == 3
