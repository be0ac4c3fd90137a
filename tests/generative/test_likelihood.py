"""Quantisation of uint8 images to levels and bits per dimension, against the stored digits and a
NumPy float64 reference."""

import math

import chex
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import load_digits

from visionax.data.builders.digits import source_digits
from visionax.generative import likelihood


def test_quantize_recovers_the_digits_grey_levels_exactly():
    stored, _ = source_digits()  # round(k·255/16)
    levels = np.asarray(likelihood.quantize(stored, 17))
    np.testing.assert_array_equal(levels, load_digits().images.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(likelihood.dequantize(levels, 17)), stored)


def test_quantize_at_256_levels_is_the_identity_and_dequantize_inverts_it():
    pixels = np.arange(256, dtype=np.uint8).reshape(4, 8, 8, 1)
    np.testing.assert_array_equal(np.asarray(likelihood.quantize(pixels, 256)), pixels.astype(np.int32))
    np.testing.assert_array_equal(np.asarray(likelihood.dequantize(pixels, 256)), pixels)
    # Four levels: 0, 85, 170, 255 are the representable values; each pixel goes to the nearest.
    np.testing.assert_array_equal(np.asarray(likelihood.quantize(np.array([0, 42, 43, 127, 128, 255], np.uint8), 4)),
                                  [0, 0, 1, 1, 2, 3])


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_bits_per_dim_equals_numpy_float64(levels):
    rng = np.random.default_rng(levels)
    logits = rng.normal(scale=3.0, size=(3, 4, 5, 2, levels))
    images = rng.integers(0, levels, size=(3, 4, 5, 2))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    expected = -np.mean(np.take_along_axis(log_softmax, images[..., None], axis=-1)) / np.log(2.0)
    chex.assert_trees_all_close(float(likelihood.bits_per_dim(jnp.asarray(logits, jnp.float32), images)),
                                expected, rtol=1e-5)


def test_uniform_logits_give_the_uniform_bound_and_extreme_logits_stay_finite():
    images = np.zeros((2, 8, 8, 1), np.int32)
    assert float(likelihood.bits_per_dim(jnp.zeros((2, 8, 8, 1, 17)), images)) == pytest.approx(math.log2(17), rel=1e-6)
    assert likelihood.uniform_bits_per_dim(17) == pytest.approx(4.087462841250339)
    confident = jnp.zeros((2, 8, 8, 1, 17)).at[..., 0].set(1e4)  # log of a sigmoid/softmax in two steps overflows
    assert float(likelihood.bits_per_dim(confident, images)) == pytest.approx(0.0, abs=1e-6)
    # a float32 mean of 128 terms near 1e4 (a running sum's spacing reaches 0.125): 1e-5 of it; the
    # answer without its log 16 is 2.8e-4 off
    assert float(likelihood.bits_per_dim(-confident, images)) == pytest.approx((1e4 + math.log(16)) / math.log(2), rel=1e-5)


def test_nats_to_bits_per_dim():
    dims = 32 * 32 * 3
    assert float(likelihood.nats_to_bits_per_dim(dims * math.log(2) * 3.0, dims)) == pytest.approx(3.0)
