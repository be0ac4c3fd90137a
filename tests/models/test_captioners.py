"""The Flax captioners: the encoder's feature map is what the zoo pools, the bottleneck captioner
equals the barebone captioning loss, the attention LSTM and the Transformer's decoder layer equal
NumPy float64 references written from their formulas, and one-word-at-a-time decoding gives the
scores of the parallel (teacher-forced) pass."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.errors import UserError
from visionax.losses.sequence import temporal_softmax_loss
from visionax.models import captioners, get_model
from visionax.models.captioning import rnn_captioning_loss

V, C = 9, 6  # vocabulary, feature channels
CAPTIONS = np.array([[1, 5, 6, 7, 2, 0], [1, 8, 2, 0, 0, 0], [1, 4, 4, 5, 6, 2]])


def random_features(seed=0, shape=(3, 2, 3, C)):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def randomised(variables, seed=1, scale=0.5):
    """Every parameter redrawn from N(0, scale²): non-zero biases, sharper than the init."""
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree.unflatten(tree, [scale * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])


def initialised(model, features, seed=1, scale=0.5):
    return randomised(model.init(jax.random.key(0), features, jnp.asarray(CAPTIONS[:, :-1])), seed, scale)


@pytest.mark.parametrize("name, options", [("small_cnn", {"widths": (4, 8)}), ("resnet18", {"width": 4, "cifar_stem": True})])
def test_encode_returns_the_map_the_model_pools(name, options):
    encoder = get_model(name, num_classes=None, **options)
    images = random_features(2, (2, 16, 16, 3))
    variables = encoder.init(jax.random.key(0), images)
    feature_map, batch_stats = captioners.encode(encoder, variables, images)
    assert feature_map.ndim == 4 and feature_map.shape[1] > 1 and batch_stats is None
    chex.assert_trees_all_close(feature_map.mean(axis=(1, 2)), encoder.apply(variables, images), atol=1e-5)
    # in training: batch statistics, and the map of the training-mode forward pass
    train_map, updates = captioners.encode(encoder, variables, images, train=True)
    train_features, state = encoder.apply(variables, images, train=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(train_map.mean(axis=(1, 2)), train_features, atol=1e-5)
    chex.assert_trees_all_close(updates, state["batch_stats"])


def test_encode_reads_a_vit_s_patch_tokens_on_their_grid():
    encoder = get_model("vit_tiny_16", num_classes=None, patch_size=4, width=16, depth=1, num_heads=2)
    images = random_features(3, (2, 8, 12, 3))
    variables = encoder.init(jax.random.key(0), images)
    feature_map, _ = captioners.encode(encoder, variables, images)
    _, state = encoder.apply(variables, images, capture_intermediates=True, mutable=["intermediates"])
    tokens = state["intermediates"]["encoder_norm"]["__call__"][0]  # [N, 1 + 2·3, 16]
    chex.assert_trees_all_close(feature_map, tokens[:, 1:].reshape(2, 2, 3, 16))


class Flattening(nn.Module):
    """A classifier on the flattened image: no feature map to attend over."""

    @nn.compact
    def __call__(self, images, train=False):
        return nn.Dense(3)(images.reshape(images.shape[0], -1))


def test_encode_refuses_a_model_without_a_feature_map():
    encoder = Flattening()
    images = random_features(0, (2, 4, 4, 1))
    with pytest.raises(UserError, match="no spatial feature map"):
        captioners.encode(encoder, encoder.init(jax.random.key(0), images), images)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_bottleneck_captioner_equals_the_barebone_loss(cell):
    model = captioners.RNNCaptioner(V, C, wordvec_dim=5, hidden_dim=7, cell=cell)
    features = random_features()
    variables = initialised(model, features)
    logits = model.apply(variables, features, jnp.asarray(CAPTIONS[:, :-1]))
    targets = jnp.asarray(CAPTIONS[:, 1:])
    loss = temporal_softmax_loss(logits, targets, targets != 0)
    # the barebone network reads the averaged map as its feature vector
    barebone = rnn_captioning_loss(variables["params"], features.mean(axis=(1, 2)), jnp.asarray(CAPTIONS), cell=cell)
    np.testing.assert_allclose(loss, barebone, rtol=1e-5)
    assert float(loss) > 1.0


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def numpy_attention_lstm_logits(p, features, captions):
    """Show, Attend and Tell from the formulas, float64, a loop over steps and examples."""
    A = features @ p["W_proj"] + p["b_proj"]  # [N, h, w, H]
    N, h, w, H = A.shape
    hidden = cell = A.mean(axis=(1, 2))
    logits, maps = [], []
    for t in range(captions.shape[1]):
        flat = A.reshape(N, h * w, H)
        scores = np.einsum("npd,nd->np", flat, hidden) / np.sqrt(H)
        weights = np.exp(scores - scores.max(1, keepdims=True))
        weights /= weights.sum(1, keepdims=True)
        context = np.einsum("np,npd->nd", weights, flat)
        a = p["W_embed"][captions[:, t]] @ p["Wx"] + hidden @ p["Wh"] + context @ p["Wattn"] + p["b"]
        i, f, o, g = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 2 * H:3 * H]), np.tanh(a[:, 3 * H:])
        cell = f * cell + i * g
        hidden = o * np.tanh(cell)
        logits.append(hidden @ p["W_vocab"] + p["b_vocab"])
        maps.append(weights.reshape(N, h, w))
    return np.stack(logits, 1), np.stack(maps, 1)


def test_attention_lstm_captioner_equals_numpy_float64():
    model = captioners.AttentionLSTMCaptioner(V, C, wordvec_dim=5, hidden_dim=7)
    with jax.enable_x64():
        features = jnp.asarray(np.random.default_rng(0).normal(size=(3, 2, 3, C)))
        variables = jax.tree.map(lambda x: x.astype(jnp.float64), initialised(model, features.astype(jnp.float32)))
        logits = model.apply(variables, features, jnp.asarray(CAPTIONS[:, :-1]))
        state = model.apply(variables, features, method="initial_state")
        maps = []
        for t in range(CAPTIONS.shape[1] - 1):
            state, _, attention = model.apply(variables, state, jnp.asarray(CAPTIONS[:, t]), method="step")
            maps.append(attention)
        assert logits.dtype == jnp.float64
    params = jax.tree.map(np.asarray, variables["params"])
    expected_logits, expected_maps = numpy_attention_lstm_logits(params, np.asarray(features), CAPTIONS[:, :-1])
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.stack(maps, 1), expected_maps, rtol=1e-10, atol=1e-12)
    # the attention is a distribution over the map's positions that moves from word to word
    np.testing.assert_allclose(expected_maps.sum(axis=(2, 3)), 1.0)
    assert np.abs(expected_maps[:, 1] - expected_maps[:, 0]).max() > 1e-3


def numpy_layer_norm(x, p, epsilon=1e-5):
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * p["scale"] + p["bias"]


def numpy_attention(p, query, memory, heads, mask=None):
    dense = lambda x, q: x @ q["kernel"] + q["bias"]  # noqa: E731
    q, k, v = dense(query, p["query"]), dense(memory, p["key"]), dense(memory, p["value"])
    split = lambda x: x.reshape(*x.shape[:2], heads, -1).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(*query.shape[:2], -1)
    return dense(out, p["proj"]), weights


def test_decoder_layer_is_post_norm_as_written():
    """x = LN(x + SA(x)), x = LN(x + CA(x, m)), x = LN(x + W₂ relu(W₁x + b₁) + b₂), in float64."""
    layer = captioners.DecoderLayer(embed_dim=8, num_heads=2, feedforward_dim=12, dropout_rate=0.1)
    rng = np.random.default_rng(0)
    x, memory = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 4, 8))
    mask = np.tril(np.ones((5, 5), bool))[None, None]
    with jax.enable_x64():
        variables = randomised(layer.init(jax.random.key(0), jnp.asarray(x), jnp.asarray(memory), jnp.asarray(mask)))
        output, weights = layer.apply(variables, jnp.asarray(x), jnp.asarray(memory), jnp.asarray(mask))
    p = jax.tree.map(np.asarray, variables["params"])
    y = numpy_layer_norm(x + numpy_attention(p["self_attention"], x, x, 2, mask)[0], p["norm1"])
    attended, expected_weights = numpy_attention(p["cross_attention"], y, memory, 2)
    y = numpy_layer_norm(y + attended, p["norm2"])
    hidden = np.maximum(y @ p["linear1"]["kernel"] + p["linear1"]["bias"], 0)
    y = numpy_layer_norm(y + hidden @ p["linear2"]["kernel"] + p["linear2"]["bias"], p["norm3"])
    np.testing.assert_allclose(output, y, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-9, atol=1e-12)


def transformer(max_length=8):
    return captioners.CaptioningTransformer(V, embed_dim=8, num_heads=2, num_layers=2, feedforward_dim=16,
                                            max_length=max_length, dropout_rate=0.1)


def test_transformer_is_causal_and_its_steps_equal_the_parallel_pass():
    model = transformer()
    features = random_features()
    variables = initialised(model, features)
    inputs = jnp.asarray(CAPTIONS[:, :-1])
    logits = model.apply(variables, features, inputs)
    state = model.apply(variables, features, method="initial_state")
    stepped = []
    for t in range(inputs.shape[1]):
        state, step_logits, attention = model.apply(variables, state, inputs[:, t], method="step")
        stepped.append(step_logits)
        np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    chex.assert_trees_all_close(jnp.stack(stepped, 1), logits, atol=1e-5)
    # a later word changes no earlier score, and does change its own position's
    changed = model.apply(variables, features, inputs.at[:, 3].set(8))
    chex.assert_trees_all_close(changed[:, :3], logits[:, :3], atol=1e-6)
    assert np.abs(changed[:, 3] - logits[:, 3]).max() > 1e-3
    # the image matters: other features, other scores at the first word
    other = model.apply(variables, random_features(5), inputs)
    assert np.abs(other[:, 0] - logits[:, 0]).max() > 1e-3


def test_transformer_dropout_only_in_training():
    model = transformer()
    features = random_features()
    variables = initialised(model, features, scale=0.3)
    inputs = jnp.asarray(CAPTIONS[:, :-1])
    evaluated = model.apply(variables, features, inputs)
    chex.assert_trees_all_close(model.apply(variables, features, inputs, train=False), evaluated)
    one = model.apply(variables, features, inputs, train=True, rngs={"dropout": jax.random.key(1)})
    two = model.apply(variables, features, inputs, train=True, rngs={"dropout": jax.random.key(2)})
    assert np.abs(one - evaluated).max() > 1e-3 and np.abs(one - two).max() > 1e-3


def test_transformer_refuses_captions_longer_than_its_positions():
    model = transformer(max_length=4)
    with pytest.raises(UserError, match="exceed the Transformer's max_length 4"):
        model.init(jax.random.key(0), random_features(), jnp.asarray(CAPTIONS[:, :-1]))


def test_unknown_cell_is_refused():
    with pytest.raises(UserError, match="unknown captioning cell 'gru'"):
        captioners.RNNCaptioner(V, C, cell="gru").init(jax.random.key(0), random_features(), jnp.asarray(CAPTIONS))


def test_captioners_train_end_to_end_with_the_encoder():
    """Gradients reach every parameter of encoder and decoder through `encode`."""
    encoder = get_model("small_cnn", num_classes=None, widths=(4, 6))
    decoder = captioners.AttentionLSTMCaptioner(V, 6, wordvec_dim=4, hidden_dim=5)
    images = random_features(4, (3, 8, 8, 1))
    encoder_variables = encoder.init(jax.random.key(0), images)
    features, _ = captioners.encode(encoder, encoder_variables, images)
    params = {"encoder": encoder_variables["params"],
              "decoder": decoder.init(jax.random.key(1), features, jnp.asarray(CAPTIONS[:, :-1]))["params"]}

    def loss(params):
        features, _ = captioners.encode(encoder, {**encoder_variables, "params": params["encoder"]}, images, train=True)
        logits = decoder.apply({"params": params["decoder"]}, features, jnp.asarray(CAPTIONS[:, :-1]))
        targets = jnp.asarray(CAPTIONS[:, 1:])
        return temporal_softmax_loss(logits, targets, targets != 0)

    grads = jax.grad(loss)(params)
    for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
        assert float(jnp.abs(leaf).max()) > 0, jax.tree_util.keystr(path)
