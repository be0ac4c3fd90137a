"""ViT: exact parameter counts (timm / torchvision) under eval_shape, the forward pass against a
float64 NumPy reference, the class token, the patch embedding, attention's permutation symmetry,
position embeddings at other resolutions, the encoder mode, options and errors, training under jit."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from visionax.errors import UserError
from visionax.layers import regularize
from visionax.models import get_model, model_options, vit
from visionax.models.costs import param_count

from tests.models.references import assert_forward_close, dense_ref, modules_used, random_images, random_variables

# timm vit_{tiny,small,base}_patch16_224, vit_base_patch32_224, vit_large_patch16_224;
# torchvision vit_b_16, vit_b_32, vit_l_16 (num_params of their weight tables).
COUNTS = {"vit_tiny_16": 5_717_416, "vit_small_16": 22_050_664, "vit_base_16": 86_567_656,
          "vit_base_32": 88_224_232, "vit_large_16": 304_326_632}

TINY = dict(patch_size=4, width=16, depth=2, num_heads=2, mlp_dim=24, head_zero_init=False)


def formula(patch, width, depth, mlp, classes=1000, size=224):
    """Parameters written out: patch embedding, class token, position embedding, per block two
    LayerNorms, q/k/v/proj and the MLP, the final LayerNorm and the head."""
    tokens = (size // patch) ** 2 + 1
    block = 2 * 2 * width + 4 * (width * width + width) + (width * mlp + mlp) + (mlp * width + width)
    return ((patch * patch * 3 + 1) * width + width + tokens * width + depth * block + 2 * width
            + (width + 1) * classes)


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_counts_equal_timm_and_torchvision(name):
    arch = vit.CONFIGS[name]["arch"]
    assert param_count(name) == COUNTS[name]
    assert formula(arch.patch_size, arch.width, arch.depth, 4 * arch.width) == COUNTS[name]


def test_options_replace_the_architecture_and_mlp_follows_width():
    # width 64: MLP 256 (ratio 4) unless mlp_dim is given; 32×32 images, patch 8: 16 patches.
    assert param_count("vit_tiny_16", resolution=32, patch_size=8, width=64, depth=3, num_heads=4,
                       num_classes=10) == formula(8, 64, 3, 256, classes=10, size=32)
    assert param_count("vit_tiny_16", resolution=32, patch_size=8, width=128, depth=6, num_heads=4,
                       mlp_dim=256, num_classes=10) == formula(8, 128, 6, 256, classes=10, size=32)
    assert {"patch_size", "width", "depth", "num_heads", "mlp_dim", "dropout", "attention_dropout",
            "drop_path", "dtype", "conv_impl", "bn_axis_name"} <= set(model_options("vit_base_16"))


# ---------------------------------------------------------------------------------------------------
# float64 NumPy reference.

def layer_norm_ref(x, params, eps=1e-6):
    x = np.asarray(x, np.float64)
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.asarray(params["scale"], np.float64) + np.asarray(params["bias"], np.float64)


def attention_ref(x, params, heads):
    n, t, d = x.shape
    split = lambda y: y.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)  # noqa: E731
    q, k, v = (split(dense_ref(x, params[name])) for name in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = (weights @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    return dense_ref(out, params["proj"])


def patchify_ref(images, p):
    n, h, w, c = images.shape
    x = np.asarray(images, np.float64).reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def vit_ref(images, params, patch, heads, depth, pos=None):
    """Returns (logits or None, class-token feature, final LayerNorm of every token)."""
    kernel = params["embedding"]["kernel"]
    tokens = patchify_ref(images, patch) @ np.asarray(kernel, np.float64).reshape(-1, kernel.shape[-1])
    tokens += np.asarray(params["embedding"]["bias"], np.float64)
    cls = np.broadcast_to(np.asarray(params["cls"], np.float64), (tokens.shape[0], 1, tokens.shape[-1]))
    x = np.concatenate([cls, tokens], 1) + np.asarray(params["pos_embedding"] if pos is None else pos, np.float64)
    for i in range(depth):
        p = params[f"block{i}"]
        x = x + attention_ref(layer_norm_ref(x, p["ln1"]), p["attention"], heads)
        h = dense_ref(layer_norm_ref(x, p["ln2"]), p["mlp"]["fc1"])
        h = 0.5 * h * (1 + erf(h / math.sqrt(2)))  # exact GELU
        x = x + dense_ref(h, p["mlp"]["fc2"])
    final = layer_norm_ref(x, params["encoder_norm"])
    logits = dense_ref(final[:, 0], params["head"]) if "head" in params else None
    return logits, final[:, 0], final


@pytest.fixture(scope="module")
def tiny():
    model = get_model("vit_tiny_16", num_classes=5, **TINY)
    x = random_images(3, 8, seed=1)
    return model, random_variables(model, x), x


def test_forward_equals_numpy_reference(tiny):
    model, variables, x = tiny
    logits = jax.jit(model.apply)(variables, x)
    want, _, _ = vit_ref(x, variables["params"], 4, 2, 2)
    assert logits.shape == (3, 5) and logits.dtype == jnp.float32
    assert_forward_close(logits, want, rtol=1e-5)


def test_encoder_is_the_class_token_row_of_the_final_layernorm(tiny):
    model, variables, x = tiny
    encoder = get_model("vit_tiny_16", num_classes=None, bn_axis_name="data", **TINY)  # bn_axis_name: a no-op
    params = {k: v for k, v in variables["params"].items() if k != "head"}
    features = jax.jit(encoder.apply)({"params": params}, x)
    _, cls_feature, final = vit_ref(x, variables["params"], 4, 2, 2)
    assert features.shape == (3, 16) and features.dtype == jnp.float32
    assert_forward_close(features, final[:, 0], rtol=1e-5)
    # The head reads that row and nothing else: logits = head(feature).
    np.testing.assert_allclose(model.apply(variables, x), dense_ref(features, variables["params"]["head"]),
                               rtol=1e-5, atol=1e-5)
    # The encoder is ViT's class token, not a mean over tokens.
    assert np.abs(final.mean(1) - cls_feature).max() > 0.1
    assert set(jax.eval_shape(encoder.init, jax.random.key(0), x)["params"]) == set(params)


def test_patch_embedding_is_a_dense_layer_on_flattened_patches(tiny):
    model, variables, x = tiny
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    embedded = state["intermediates"]["embedding"]["__call__"][0]
    kernel = variables["params"]["embedding"]["kernel"]  # [4, 4, 3, 16]: HWIO
    dense = dense_ref(patchify_ref(x, 4), {"kernel": np.asarray(kernel).reshape(48, 16),
                                           "bias": variables["params"]["embedding"]["bias"]})
    np.testing.assert_allclose(np.asarray(embedded).reshape(3, 4, 16), dense, rtol=1e-5, atol=1e-5)


def _permute_patches(images, order, p=4):
    """Images whose p×p patches (row-major) are rearranged: new patch j is old patch order[j]."""
    patches = patchify_ref(images, p).reshape(images.shape[0], -1, p, p, images.shape[-1])[:, order]
    n, h, w, c = images.shape
    grid = patches.reshape(n, h // p, w // p, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, h, w, c).astype(np.float32)


def test_patch_order_matters_only_through_position_embeddings(tiny):
    model, variables, x = tiny
    order = np.array([2, 0, 3, 1])
    moved = _permute_patches(x, order)
    apply = jax.jit(model.apply)
    pos = variables["params"]["pos_embedding"]
    # With position embeddings, moving patches changes the logits...
    assert np.abs(apply(variables, moved) - apply(variables, x)).max() > 1e-2
    # ...moving their position embeddings with them does not (attention is permutation-equivariant)...
    moved_pos = jnp.concatenate([pos[:, :1], pos[:, 1:][:, order]], axis=1)
    permuted = {"params": {**variables["params"], "pos_embedding": moved_pos}}
    np.testing.assert_allclose(apply(permuted, moved), apply(variables, x), rtol=1e-5, atol=1e-5)
    # ...and without position embeddings the class token cannot tell the orders apart.
    zero = {"params": {**variables["params"], "pos_embedding": jnp.zeros_like(pos)}}
    np.testing.assert_allclose(apply(zero, moved), apply(zero, x), rtol=1e-5, atol=1e-5)


def test_position_embedding_is_made_for_the_init_resolution_and_resampled_after(tiny):
    model, variables, x = tiny
    assert variables["params"]["pos_embedding"].shape == (1, 1 + 4, 16)  # 8×8, patch 4: 2×2 grid
    big = random_images(2, 16, seed=3)
    assert jax.eval_shape(model.init, jax.random.key(0), big)["params"]["pos_embedding"].shape == (1, 17, 16)
    pos = variables["params"]["pos_embedding"]
    resized = vit.resample_position_embedding(pos, (4, 4))
    np.testing.assert_array_equal(resized[:, 0], pos[:, 0])  # the class token's row is kept
    assert vit.resample_position_embedding(pos, (2, 2)) is pos
    # Applied to 16×16 images: the forward pass with the resampled embedding.
    want, _, _ = vit_ref(big, variables["params"], 4, 2, 2, pos=resized)
    assert_forward_close(jax.jit(model.apply)(variables, big), want, rtol=1e-5)
    # Bilinear with half-pixel centres: a ramp along the rows upsampled 4 → 8 is a ramp inside.
    ramp = jnp.broadcast_to(jnp.arange(4.0)[:, None, None], (4, 4, 1)).reshape(1, 16, 1)
    up = vit.resample_position_embedding(jnp.concatenate([jnp.zeros((1, 1, 1)), ramp], 1), (8, 8))
    rows = np.asarray(up[0, 1:, 0]).reshape(8, 8)
    np.testing.assert_allclose(rows[1:7, 3], np.arange(1, 7) / 2 - 0.25, atol=1e-6)
    np.testing.assert_allclose(rows[[0, 7], 3], [0, 3], atol=1e-6)  # clamped at the edges


def test_resolution_errors():
    model = get_model("vit_tiny_16", num_classes=5, **TINY)
    with pytest.raises(UserError, match="divisible by 4"):
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 10, 8, 3)))
    wide = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 16, 3)))  # 2×4 grid
    with pytest.raises(UserError, match="non-square"):
        jax.eval_shape(model.apply, wide, jnp.zeros((1, 8, 8, 3)))


@pytest.mark.parametrize("options,problem", [
    (dict(width=30, num_heads=4), "not divisible by num_heads"),
    (dict(dropout=1.0), "dropout must be a rate"),
    (dict(depth=0), "depth must be a positive integer"),
])
def test_option_errors(options, problem):
    with pytest.raises(UserError, match=problem):
        get_model("vit_tiny_16", **options)


def test_small_vit_trains_under_jit_with_dropout_and_stochastic_depth():
    model = get_model("vit_tiny_16", num_classes=10, patch_size=2, width=32, depth=2, num_heads=4,
                      dropout=0.1, attention_dropout=0.1, drop_path=0.2, head_zero_init=False)
    x = random_images(4, 8, seed=2, channels=1)
    labels = jnp.arange(4)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    used = modules_used(model, variables, x, train=True, rngs={"dropout": jax.random.key(0)})
    assert regularize.Dropout in used

    @jax.jit
    @chex.assert_max_traces(n=1)
    def loss_and_grad(params, images, key):
        def loss(params):
            logits = model.apply({"params": params}, images, train=True, rngs={"dropout": key})
            return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])
        return jax.value_and_grad(loss)(params)

    value, grads = loss_and_grad(variables["params"], x, jax.random.key(1))
    value2, _ = loss_and_grad(variables["params"], x + 1, jax.random.key(2))  # no retrace
    leaves = jax.tree.leaves(grads)
    assert np.isfinite(value) and np.isfinite(value2) and value != value2
    assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in leaves)
    # Training noise: two keys differ, evaluation is deterministic and ignores the rates.
    train = lambda key: model.apply(variables, x, train=True, rngs={"dropout": key})  # noqa: E731
    assert np.abs(train(jax.random.key(3)) - train(jax.random.key(4))).max() > 1e-3
    plain = get_model("vit_tiny_16", num_classes=10, patch_size=2, width=32, depth=2, num_heads=4)
    np.testing.assert_array_equal(model.apply(variables, x), plain.apply(variables, x))


def test_zero_head_init_gives_zero_logits_and_gradient_only_to_the_head():
    model = get_model("vit_tiny_16", num_classes=3, **{**TINY, "head_zero_init": True})
    x = random_images(2, 8, seed=4)
    params = model.init(jax.random.key(0), x)["params"]
    assert not np.any(model.apply({"params": params}, x))
    assert float(jnp.std(params["pos_embedding"])) == pytest.approx(0.02, rel=0.2)
    grads = jax.grad(lambda p: model.apply({"params": p}, x)[:, 0].sum() - model.apply({"params": p}, x)[:, 1].sum())(params)
    assert np.abs(grads["head"]["kernel"]).max() > 0
    assert all(not np.any(g) for k, v in grads.items() if k != "head" for g in jax.tree.leaves(v))


def test_bfloat16_and_gemm_patch_embedding(tiny):
    model, variables, x = tiny
    f32 = np.asarray(model.apply(variables, x), np.float64)
    bf16 = get_model("vit_tiny_16", num_classes=5, dtype=jnp.bfloat16, **TINY).apply(variables, x)
    assert bf16.dtype == jnp.float32
    error = np.abs(np.asarray(bf16, np.float64) - f32).max() / np.abs(f32).max()
    assert 1e-4 < error < 0.05, error  # computed in bf16 (not f32), close to it
    gemm = get_model("vit_tiny_16", num_classes=5, conv_impl="gemm", **TINY).apply(variables, x)
    np.testing.assert_allclose(gemm, f32, rtol=1e-5, atol=1e-5)
