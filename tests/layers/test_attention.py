"""Attention against NumPy float64 references written from the formulas and against Flax's
`MultiHeadDotProductAttention` with the weights mapped across; gradients against finite differences."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.gradcheck import assert_grad_close
from visionax.layers import attention

N, S, T, E, HEADS = 2, 3, 5, 8, 2


def numpy_softmax(scores, axis=-1):
    shifted = np.exp(scores - scores.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def test_soft_attention_equals_numpy_float64():
    rng = np.random.default_rng(0)
    query, features = rng.normal(size=(N, 4)), rng.normal(size=(N, 3, 2, 4))
    expected_weights = np.empty((N, 3, 2))
    expected_context = np.empty((N, 4))
    for n in range(N):
        flat = features[n].reshape(6, 4)
        weights = numpy_softmax(flat @ query[n] / np.sqrt(4))
        expected_weights[n] = weights.reshape(3, 2)
        expected_context[n] = weights @ flat
    with jax.enable_x64():
        context, weights = jax.jit(attention.soft_attention)(jnp.asarray(query), jnp.asarray(features))
    chex.assert_shape([context, weights], [(N, 4), (N, 3, 2)])
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-12)
    np.testing.assert_allclose(context, expected_context, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(weights).sum(axis=(1, 2)), 1.0, rtol=1e-12)


def test_soft_attention_gradient_equals_finite_differences():
    rng = np.random.default_rng(1)
    projection = rng.normal(size=(N, 4))

    def loss(arrays):
        context, weights = attention.soft_attention(*arrays)
        return jnp.sum(context * projection) + jnp.sum(weights ** 2)

    assert_grad_close(loss, (rng.normal(size=(N, 4)), rng.normal(size=(N, 3, 2, 4))), tol=1e-6)


def test_attention_lstm_step_equals_numpy_float64():
    rng = np.random.default_rng(2)
    D, H, C = 3, 4, 5
    x, h, c, context = rng.normal(size=(N, D)), rng.normal(size=(N, H)), rng.normal(size=(N, H)), rng.normal(size=(N, C))
    Wx, Wh, Wattn, b = rng.normal(size=(D, 4 * H)), rng.normal(size=(H, 4 * H)), rng.normal(size=(C, 4 * H)), rng.normal(size=4 * H)
    a = x @ Wx + h @ Wh + context @ Wattn + b
    i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
    expected_c = f * c + i * g
    expected_h = o * np.tanh(expected_c)
    with jax.enable_x64():
        h_next, c_next = attention.attention_lstm_step(*map(jnp.asarray, (x, h, c, context, Wx, Wh, Wattn, b)))
    np.testing.assert_allclose(h_next, expected_h, rtol=1e-12)
    np.testing.assert_allclose(c_next, expected_c, rtol=1e-12)


def numpy_attention(query, key, value, mask):
    """query `[N, heads, S, d]`, key/value `[N, heads, T, d]`, mask True = attend: softmax(QKᵀ/√d)V."""
    scores = np.einsum("nhsd,nhtd->nhst", query, key) / np.sqrt(query.shape[-1])
    scores = np.where(mask, scores, -np.inf)
    return np.einsum("nhst,nhtd->nhsd", numpy_softmax(scores), value)


def test_scaled_dot_product_attention_masks_with_minus_infinity():
    rng = np.random.default_rng(3)
    q, k, v = rng.normal(size=(N, HEADS, S, 4)), rng.normal(size=(N, HEADS, T, 4)), rng.normal(size=(N, HEADS, T, 4))
    mask = rng.random(size=(N, 1, S, T)) < 0.6
    mask[..., 0] = True  # every query attends to something
    with jax.enable_x64():
        output, weights = attention.scaled_dot_product_attention(*map(jnp.asarray, (q, k, v, mask)))
    np.testing.assert_allclose(output, numpy_attention(q, k, v, mask), rtol=1e-12)
    assert np.all(np.asarray(weights)[np.broadcast_to(~mask, weights.shape)] == 0.0)


def test_a_query_with_nothing_to_attend_gets_uniform_weights_not_nan():
    q = k = v = jnp.ones((1, 1, 2, 4))
    mask = jnp.asarray([[[[True, True], [False, False]]]])
    output, weights = attention.scaled_dot_product_attention(q, k, v, mask)
    np.testing.assert_allclose(weights[0, 0, 1], [0.5, 0.5])
    assert np.isfinite(np.asarray(output)).all()


def test_dropout_drops_the_weights_before_they_multiply_the_values():
    rng = np.random.default_rng(4)
    q, k, v = (jnp.asarray(rng.normal(size=(N, HEADS, length, 4)), jnp.float32) for length in (S, T, T))
    key, rate = jax.random.key(7), 0.5
    output, weights = attention.scaled_dot_product_attention(q, k, v, None, rate, key)
    keep = jax.random.bernoulli(key, 1 - rate, weights.shape)
    expected = jnp.einsum("nhst,nhtd->nhsd", jnp.where(keep, weights / (1 - rate), 0.0), v)
    np.testing.assert_allclose(output, expected, rtol=1e-6)
    undropped, _ = attention.scaled_dot_product_attention(q, k, v)
    assert not np.allclose(output, undropped)


def test_causal_mask_lets_a_position_see_itself_and_the_past():
    np.testing.assert_array_equal(attention.causal_mask(3)[0, 0],
                                  [[True, False, False], [True, True, False], [True, True, True]])


def random_params(module, *inputs, seed=0):
    """The module's parameters with every leaf (biases included) drawn from N(0, 0.5²)."""
    params = module.init(jax.random.key(seed), *inputs)["params"]
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves)])


def flax_params(params):
    """visionax's `[E, E]` Dense kernels → Flax's DenseGeneral `[E, heads, E/heads]` (and
    `[heads, E/heads, E]` for the output): the heads are contiguous chunks of the features."""
    head_dim = E // HEADS
    mapped = {name: {"kernel": params[name]["kernel"].reshape(E, HEADS, head_dim),
                     "bias": params[name]["bias"].reshape(HEADS, head_dim)} for name in ("query", "key", "value")}
    mapped["out"] = {"kernel": params["proj"]["kernel"].reshape(HEADS, head_dim, E), "bias": params["proj"]["bias"]}
    return mapped


@pytest.mark.parametrize("masked", [False, True])
def test_multi_head_attention_equals_flax_with_mapped_weights(masked):
    rng = np.random.default_rng(5)
    query, memory = jnp.asarray(rng.normal(size=(N, S, E)), jnp.float32), jnp.asarray(rng.normal(size=(N, T, E)), jnp.float32)
    mask = jnp.asarray(rng.random(size=(N, 1, S, T)) < 0.7).at[..., 0].set(True) if masked else None
    ours = attention.MultiHeadAttention(E, HEADS)
    params = random_params(ours, query, memory)
    theirs = nn.MultiHeadDotProductAttention(num_heads=HEADS, qkv_features=E, out_features=E, deterministic=True)
    expected = theirs.apply({"params": flax_params(params)}, query, memory, memory, mask=mask)
    output = jax.jit(ours.apply)({"params": params}, query, memory, memory, mask)
    np.testing.assert_allclose(output, expected, rtol=1e-5, atol=1e-5)


def test_multi_head_attention_equals_numpy_per_contiguous_head_chunk():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(N, S, E))
    module = attention.MultiHeadAttention(E, HEADS)
    with jax.enable_x64():
        params = jax.tree.map(np.asarray, random_params(module, jnp.asarray(x)))
        output = module.apply({"params": params}, jnp.asarray(x), mask=attention.causal_mask(S))

    def dense(name, inputs):
        return inputs @ np.asarray(params[name]["kernel"], np.float64) + np.asarray(params[name]["bias"], np.float64)

    head_dim = E // HEADS
    causal = np.tril(np.ones((S, S), bool))
    heads = []
    for head in range(HEADS):
        chunk = slice(head * head_dim, (head + 1) * head_dim)
        q, k, v = (dense(name, x)[..., chunk] for name in ("query", "key", "value"))
        scores = np.where(causal, np.einsum("nsd,ntd->nst", q, k) / np.sqrt(head_dim), -np.inf)
        heads.append(np.einsum("nst,ntd->nsd", numpy_softmax(scores), v))
    np.testing.assert_allclose(output, dense("proj", np.concatenate(heads, axis=-1)), rtol=1e-10)


def test_multi_head_attention_dropout_keeps_the_mean_and_is_off_at_evaluation():
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.normal(size=(1, S, E)), jnp.float32)
    module = attention.MultiHeadAttention(E, HEADS, dropout_rate=0.5)
    params = random_params(module, x)
    evaluation = module.apply({"params": params}, x)
    np.testing.assert_array_equal(module.apply({"params": params}, x, train=False), evaluation)

    def sample(key):
        return module.apply({"params": params}, x, train=True, rngs={"dropout": key})

    samples = jax.jit(jax.vmap(sample))(jax.random.split(jax.random.key(0), 4000))
    assert not np.allclose(samples[0], evaluation, atol=1e-3)
    # Inverted dropout on the weights keeps the expectation: E[output] = the evaluation output.
    standard_error = samples.std(axis=0) / np.sqrt(len(samples))
    assert np.all(np.abs(samples.mean(axis=0) - evaluation) < 5 * standard_error + 1e-6)


def test_multi_head_attention_sows_the_weights_and_checks_heads():
    x = jnp.ones((N, S, E))
    module = attention.MultiHeadAttention(E, HEADS)
    params = module.init(jax.random.key(0), x)["params"]
    _, state = module.apply({"params": params}, x, mask=attention.causal_mask(S), mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention_weights"]
    chex.assert_shape(weights, (N, HEADS, S, S))
    np.testing.assert_allclose(np.triu(np.asarray(weights), k=1), 0.0)
    with pytest.raises(ValueError, match="not divisible"):
        attention.MultiHeadAttention(E, 3).init(jax.random.key(0), x)


@pytest.mark.parametrize("dim", [6, 7])
def test_positional_encoding_equals_the_formula(dim):
    encoding = np.asarray(attention.positional_encoding(50, dim), np.float64)
    expected = np.empty((50, dim))
    for position in range(50):
        for index in range(dim):
            angle = position / 10000 ** (2 * (index // 2) / dim)
            expected[position, index] = np.sin(angle) if index % 2 == 0 else np.cos(angle)
    np.testing.assert_allclose(encoding, expected, atol=2e-5)


def test_multi_head_attention_computes_in_its_dtype_with_float32_parameters():
    x = jax.random.normal(jax.random.key(0), (N, S, E))
    module = attention.MultiHeadAttention(E, HEADS, kernel_init=nn.initializers.xavier_uniform())
    params = random_params(module, x)
    half = attention.MultiHeadAttention(E, HEADS, dtype=jnp.bfloat16).apply({"params": params}, x)
    assert half.dtype == jnp.bfloat16
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    np.testing.assert_allclose(np.asarray(half, np.float32), module.apply({"params": params}, x), atol=0.1, rtol=0.05)
    # The initialiser reaches all four projections: Xavier uniform's bound √(6 / (E + E)).
    initial = module.init(jax.random.key(1), x)["params"]
    for name in ("query", "key", "value", "proj"):
        assert np.abs(initial[name]["kernel"]).max() <= np.sqrt(6 / (2 * E))
        assert np.abs(initial[name]["kernel"]).max() > 0.8 * np.sqrt(6 / (2 * E))
