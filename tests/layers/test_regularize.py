"""Regularisers: expectations preserved in training (tolerances from the sample size), deterministic evaluation."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from visionax import gradcheck
from visionax.layers import regularize as R

KEY = jax.random.key(0)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_preserves_the_expectation(rate):
    n = 200_000
    y = np.asarray(R.dropout(jnp.ones(n), rate, KEY), np.float64)
    keep = 1.0 - rate
    # y ∈ {0, 1/p}: mean 1 and variance (1 − p)/p per unit; 5 standard errors.
    assert abs(y.mean() - 1.0) < 5 * math.sqrt((1 - keep) / keep / n)
    assert abs(np.mean(y == 0) - rate) < 5 * math.sqrt(rate * keep / n)
    np.testing.assert_allclose(np.unique(y), [0.0, 1.0 / keep], rtol=1e-6)


def test_dropout_evaluation_is_the_identity_and_keys_are_deterministic():
    x = jax.random.normal(KEY, (8, 16))
    np.testing.assert_array_equal(R.dropout(x, 0.5, KEY, train=False), x)
    np.testing.assert_array_equal(R.dropout(x, 0.5, KEY), R.dropout(x, 0.5, KEY))
    assert not np.array_equal(R.dropout(x, 0.5, KEY), R.dropout(x, 0.5, jax.random.key(1)))
    module = R.Dropout(0.5)
    np.testing.assert_array_equal(module.apply({}, x, train=False), x)
    y = np.asarray(module.apply({}, x, train=True, rngs={"dropout": KEY}))
    np.testing.assert_array_equal(y, module.apply({}, x, train=True, rngs={"dropout": KEY}))
    assert np.all((y == 0) | np.isclose(y, 2 * np.asarray(x))) and (y == 0).any()
    with pytest.raises(ValueError, match="rate"):
        R.dropout(x, 1.0, KEY)


def test_dropout_gradient_is_the_scaled_mask():
    x = np.linspace(-1.0, 1.0, 12)
    mask_scaled = np.asarray(R.dropout(jnp.ones(12), 0.3, KEY))
    np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(R.dropout(v, 0.3, KEY)))(jnp.asarray(x, jnp.float32)), mask_scaled)
    gradcheck.assert_grad_close(lambda v: jnp.sum(jnp.sin(R.dropout(v, 0.3, KEY))), x)


def test_drop_connect_zeroes_weights_and_preserves_the_expected_output():
    x = jax.random.normal(jax.random.key(1), (4, 10))
    layer = R.DropConnectDense(6, rate=0.5)
    variables = layer.init(KEY, x)
    test_output = layer.apply(variables, x, train=False)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    np.testing.assert_allclose(test_output, x @ kernel + bias, rtol=1e-6)
    np.testing.assert_array_equal(test_output, layer.apply(variables, x, train=False))

    # One masked kernel: exactly the zeroed weights, the rest scaled by 2.
    masked = R.drop_connect(kernel, 0.5, KEY)
    zero = np.asarray(masked) == 0
    assert 0 < zero.mean() < 1
    np.testing.assert_allclose(np.asarray(masked)[~zero], 2 * np.asarray(kernel)[~zero], rtol=1e-6)

    samples = 4000
    keys = jax.random.split(jax.random.key(2), samples)
    outputs = jax.vmap(lambda k: layer.apply(variables, x, train=True, rngs={"dropout": k}))(keys)
    outputs = np.asarray(outputs, np.float64)
    stderr = outputs.std(axis=0) / math.sqrt(samples)
    assert np.all(np.abs(outputs.mean(axis=0) - np.asarray(test_output)) < 5 * stderr + 1e-6)
    gradcheck.assert_grad_close(
        lambda p: jnp.sum(jnp.tanh(layer.apply({"params": p}, np.asarray(x, np.float64), train=True, rngs={"dropout": KEY}))),
        jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"]),
    )


def test_stochastic_depth_drops_whole_examples_and_keeps_all_at_test():
    batch, rate = 20_000, 0.25
    branch = jnp.ones((batch, 3))
    y = np.asarray(R.drop_path(branch, rate, KEY))
    per_example = y[:, 0]
    assert np.all(y == per_example[:, None]), "one decision per example"
    assert abs(np.mean(per_example == 0) - rate) < 5 * math.sqrt(rate * (1 - rate) / batch)
    assert abs(per_example.mean() - 1.0) < 5 * math.sqrt(rate / (1 - rate) / batch)
    np.testing.assert_array_equal(R.drop_path(branch, rate, KEY, train=False), branch)

    block = R.StochasticDepth(nn.Dense(3), rate=0.5)
    inputs = jax.random.normal(jax.random.key(3), (64, 3))
    variables = block.init(KEY, inputs)
    dense = nn.Dense(3).apply({"params": variables["params"]["branch"]}, inputs)
    np.testing.assert_allclose(block.apply(variables, inputs, train=False), inputs + dense, rtol=1e-6)
    out = np.asarray(block.apply(variables, inputs, train=True, rngs={"dropout": KEY}))
    dropped = np.all(np.isclose(out, np.asarray(inputs)), axis=1)
    kept = np.all(np.isclose(out, np.asarray(inputs + 2 * dense), rtol=1e-5, atol=1e-6), axis=1)
    assert np.all(dropped | kept) and dropped.any() and kept.any()


def test_fractional_pool_boundaries_partition_the_input():
    for size_in, size_out in [(25, 16), (32, 20), (10, 10), (12, 6), (7, 5)]:
        widths_seen, layouts_seen = set(), set()
        for u in np.linspace(0.0, 0.999, 23):
            bounds = np.asarray(R.fractional_pool_boundaries(size_in, size_out, u))
            layouts_seen.add(tuple(bounds.tolist()))
            assert bounds[0] == 0 and bounds[-1] == size_in and len(bounds) == size_out + 1
            widths = np.diff(bounds)
            assert set(widths) <= {math.floor(size_in / size_out), math.ceil(size_in / size_out)}
            widths_seen |= set(widths.tolist())
        # Both widths occur (one when α is an integer): the regions are not all ⌊α⌋ or all ⌈α⌉ wide.
        assert widths_seen == {math.floor(size_in / size_out), math.ceil(size_in / size_out)}
        # The offset u moves the wide regions around (a fixed layout unless α is an integer).
        assert (len(layouts_seen) > 1) == (size_in % size_out != 0)


def _pool_reference(image, rows, cols):
    out = np.empty((len(rows) - 1, len(cols) - 1, image.shape[-1]))
    for i in range(len(rows) - 1):
        for j in range(len(cols) - 1):
            out[i, j] = image[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].max(axis=(0, 1))
    return out


def test_fractional_max_pool_is_the_max_over_random_regions():
    x = np.asarray(jax.random.normal(KEY, (6, 25, 25, 3)))
    y = np.asarray(R.fractional_max_pool(x, (16, 16), jax.random.key(4)))
    assert y.shape == (6, 16, 16, 3)
    u = np.asarray(jax.random.uniform(jax.random.key(4), (6, 2)))
    for b in range(6):
        rows = np.asarray(R.fractional_pool_boundaries(25, 16, u[b, 0]))
        cols = np.asarray(R.fractional_pool_boundaries(25, 16, u[b, 1]))
        np.testing.assert_array_equal(y[b], _pool_reference(x[b], rows, cols))
    # Random regions in training: different keys, different outputs; per example, too.
    assert not np.array_equal(y, np.asarray(R.fractional_max_pool(x, (16, 16), jax.random.key(5))))
    # Evaluation: fixed regions, the same for every call and every example.
    same = np.repeat(x[:1], 6, axis=0)
    y_eval = np.asarray(R.fractional_max_pool(same, (16, 16), train=False))
    np.testing.assert_array_equal(y_eval, np.asarray(R.fractional_max_pool(same, (16, 16), train=False)))
    assert all(np.array_equal(y_eval[0], y_eval[b]) for b in range(6))
    module = R.FractionalMaxPool((16, 16))
    np.testing.assert_array_equal(module.apply({}, x, train=False), R.fractional_max_pool(x, (16, 16), train=False))
    gradcheck.assert_grad_close(lambda v: jnp.sum(R.fractional_max_pool(v, (3, 3), KEY) ** 2),
                                np.asarray(jax.random.normal(KEY, (1, 5, 5, 1)), np.float64))


def test_cutout_zeroes_one_square_per_example():
    batch, size = 2000, 4
    x = jnp.ones((batch, 16, 16, 3))
    y = np.asarray(R.cutout(x, size, KEY))
    zeroed = (y == 0).all(axis=-1)
    assert np.array_equal((y == 0).any(axis=-1), zeroed), "all channels of a pixel together"
    areas = zeroed.sum(axis=(1, 2))
    assert areas.max() == size * size and areas.min() >= (size // 2) ** 2  # clipped at the border
    for b in range(20):  # the zeroed pixels form one axis-aligned rectangle
        rows, cols = np.nonzero(zeroed[b])
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    # Centres are uniform: the expected zeroed area for a 4×4 patch centred at offset −2..+1 on 16 pixels.
    per_axis = np.mean([min(c + 2, 16) - max(c - 2, 0) for c in range(16)])
    expected = per_axis**2
    assert abs(areas.mean() - expected) < 5 * areas.std() / math.sqrt(batch)
    np.testing.assert_array_equal(R.cutout(x, size, KEY, train=False), x)
    np.testing.assert_array_equal(R.cutout(x, size, KEY), y)
    gradcheck.assert_grad_close(lambda v: jnp.sum(R.cutout(v, 2, KEY) ** 2),
                                np.asarray(jax.random.normal(KEY, (2, 4, 4, 1)), np.float64))


def test_mixup_mixes_inputs_and_labels_with_the_same_lambda():
    x = jax.random.normal(KEY, (32, 5, 5, 3))
    labels = jnp.arange(32) % 10
    mixed_x, mixed_y = R.mixup(x, labels, jax.random.key(7), alpha=0.4, num_classes=10)
    key_lam, key_perm = jax.random.split(jax.random.key(7))
    lam = float(jax.random.beta(key_lam, 0.4, 0.4))
    perm = np.asarray(jax.random.permutation(key_perm, 32))
    one_hot = np.eye(10)[np.asarray(labels)]
    np.testing.assert_allclose(mixed_x, lam * np.asarray(x) + (1 - lam) * np.asarray(x)[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed_y, lam * one_hot + (1 - lam) * one_hot[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, rtol=1e-6)
    # One λ per batch and a permutation: the batch means of inputs and labels are unchanged.
    np.testing.assert_allclose(mixed_x.mean(axis=0), x.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(mixed_y.mean(axis=0), one_hot.mean(axis=0), atol=1e-6)
    # Evaluation: inputs unchanged, one-hot labels.
    eval_x, eval_y = R.mixup(x, labels, alpha=0.4, num_classes=10, train=False)
    np.testing.assert_array_equal(eval_x, x)
    np.testing.assert_array_equal(eval_y, one_hot)


def test_mixup_lambda_has_the_beta_mean():
    samples, alpha = 4000, 0.2
    x, labels = jnp.array([[1.0], [0.0]]), jnp.array([0, 1])

    def weight_of_first(key):
        mixed_x, _ = R.mixup(x, labels, key, alpha=alpha, num_classes=2)
        swapped = jax.random.permutation(jax.random.split(key)[1], 2)[0] == 1
        return mixed_x[0, 0], swapped  # λ when the permutation swaps the two examples

    weights, swapped = jax.jit(jax.vmap(weight_of_first))(jax.random.split(KEY, samples))
    lam = np.asarray(weights, np.float64)[np.asarray(swapped)]
    n = len(lam)
    assert abs(n - samples / 2) < 5 * math.sqrt(samples / 4)
    beta_var = 1 / (4 * (2 * alpha + 1))  # variance of Beta(α, α)
    assert abs(lam.mean() - 0.5) < 5 * math.sqrt(beta_var / n)
    assert abs(lam.var() - beta_var) < 5 * math.sqrt(2 / n) * beta_var * 2  # loose: Beta(0.2, 0.2) is heavy at 0 and 1
    np.testing.assert_array_equal(np.asarray(weights)[~np.asarray(swapped)], 1.0)


@pytest.mark.parametrize("alpha", [0.2, 0.4])
def test_mixup_lambda_is_beta_distributed(alpha):
    """λ of 4000 keys against Beta(α, α) by a Kolmogorov–Smirnov test: accepted for the configured α,
    rejected for α/2 … 2α.

    λ is read off the mixed one-hot labels of 8 distinct classes: row i is λ e_i + (1 − λ) e_π(i),
    so λ is the smallest diagonal entry (1 only on the rows π keeps in place). float32 rounds the
    λ within 6e-8 of 1 (about 2% of Beta(0.2, 0.2)) to 1 exactly, so the test compares the folded
    m = min(λ, 1 − λ), whose distribution is 2·F_Beta(m) by symmetry, above 1e-6, where float32
    resolves both ends: the conditional CDF (2F(m) − 2F(1e-6)) / (1 − 2F(1e-6)); the mass below
    1e-6 is checked as a binomial count."""
    samples, floor = 4000, 1e-6
    labels = jnp.arange(8)

    def lam_of(key):
        _, mixed = R.mixup(jnp.zeros((8, 1)), labels, key, alpha=alpha, num_classes=8)
        return jnp.min(jnp.diagonal(mixed))

    lam = np.asarray(jax.jit(jax.vmap(lam_of))(jax.random.split(jax.random.key(11), samples)), np.float64)
    folded = np.minimum(lam, 1 - lam)
    kept = folded[folded > floor]

    def p_value(a):
        beta = scipy.stats.beta(a, a)
        low = 2 * beta.cdf(floor)
        return scipy.stats.kstest(kept, lambda m: (2 * beta.cdf(np.minimum(m, 0.5)) - low) / (1 - low)).pvalue

    assert p_value(alpha) > 1e-3
    for wrong in (alpha / 2, 0.75 * alpha, 1.25 * alpha, 2 * alpha):
        assert p_value(wrong) < 1e-6, wrong
    below = 2 * scipy.stats.beta(alpha, alpha).cdf(floor)
    assert abs((samples - len(kept)) - samples * below) < 5 * math.sqrt(samples * below * (1 - below))
