"""nt_xent, info_nce and clip_loss: NumPy float64 references, single device vs sharded over 8 fake
devices."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from visionax.losses import clip_loss, info_nce, nt_xent
from visionax.parallel import DATA_AXIS, make_mesh

DEVICES = 8


def _normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def nt_xent_reference(z1, z2, temperature):
    """The SimCLR paper's loop: 2N embeddings ordered (1, 1', 2, 2', ...), in float64."""
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    count = z1.shape[0]
    embeddings = np.empty((2 * count, z1.shape[1]))
    embeddings[0::2], embeddings[1::2] = _normalize(z1), _normalize(z2)
    similarity = embeddings @ embeddings.T

    def pair_loss(i, j):
        others = [k for k in range(2 * count) if k != i]
        return -np.log(np.exp(similarity[i, j] / temperature)
                       / np.sum(np.exp(similarity[i, others] / temperature)))

    return sum(pair_loss(2 * k, 2 * k + 1) + pair_loss(2 * k + 1, 2 * k) for k in range(count)) / (2 * count)


def info_nce_reference(query, key, queue, temperature):
    query, key, queue = (_normalize(np.asarray(x, np.float64)) for x in (query, key, queue))
    losses = []
    for q, k in zip(query, key):
        positive = np.exp(q @ k / temperature)
        losses.append(-np.log(positive / (positive + np.sum(np.exp(queue @ q / temperature)))))
    return np.mean(losses)


def numpy_grad(function, arrays, step=1e-6):
    """Centred differences of a float64 NumPy function with respect to each array."""
    arrays = [np.array(a, np.float64) for a in arrays]
    grads = []
    for array in arrays:
        grad = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            original = array[index]
            array[index] = original + step
            plus = function(*arrays)
            array[index] = original - step
            minus = function(*arrays)
            array[index] = original
            grad[index] = (plus - minus) / (2 * step)
        grads.append(grad)
    return grads


def assert_relative_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.max(np.abs(expected))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


def make_pairs():
    rng = np.random.default_rng(0)
    z1 = rng.normal(size=(16, 6)).astype(np.float32)  # 2 pairs per device, different on each
    z2 = (z1 + 0.7 * rng.normal(size=z1.shape)).astype(np.float32)
    return z1, z2


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


@functools.lru_cache(maxsize=None)
def nt_xent_reference_grads(temperature):
    """Finite-difference gradients of the float64 reference at `make_pairs()` (computed once)."""
    return numpy_grad(lambda a, b: nt_xent_reference(a, b, temperature), list(make_pairs()))


def sharded(per_device, impl, *arrays):
    """Run `per_device(*local arrays) -> (value, grads)` over 8 devices; per-device values, gathered grads."""
    def with_value_axis(*local):
        value, grads = per_device(*local)
        return value[None], grads

    if impl == "pmap":
        split = [a.reshape((DEVICES, -1) + a.shape[1:]) for a in arrays]
        values, grads = jax.pmap(with_value_axis, axis_name=DATA_AXIS)(*split)
        return values.reshape(-1), [g.reshape((-1,) + g.shape[2:]) for g in grads]
    specs = tuple(PartitionSpec(DATA_AXIS) for _ in arrays)
    function = jax.shard_map(with_value_axis, mesh=make_mesh(), in_specs=specs,
                             out_specs=PartitionSpec(DATA_AXIS), check_vma=False)
    values, grads = jax.jit(function)(*arrays)
    return values, list(grads)


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_single_device_matches_numpy(pairs, temperature):
    z1, z2 = pairs
    value, grads = jax.value_and_grad(nt_xent, argnums=(0, 1))(z1, z2, temperature)
    expected = nt_xent_reference(z1, z2, temperature)
    assert_relative_close(value, expected)
    for grad, expected_grad in zip(grads, nt_xent_reference_grads(temperature)):
        assert_relative_close(grad, expected_grad)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_nt_xent_sharded_equals_full_batch(pairs, impl):
    """Every device returns the global loss; its gradient w.r.t. its own rows, divided by the device
    count (the pmap convention documented in the module), is the full-batch gradient of those rows."""
    z1, z2 = pairs
    temperature = 0.5
    values, grads = sharded(
        lambda a, b: jax.value_and_grad(nt_xent, argnums=(0, 1))(a, b, temperature, DATA_AXIS),
        impl, z1, z2)
    full_value, full_grads = jax.value_and_grad(nt_xent, argnums=(0, 1))(z1, z2, temperature)
    expected = nt_xent_reference(z1, z2, temperature)
    assert_relative_close(values, np.full(DEVICES, expected))
    assert_relative_close(values, np.full(DEVICES, full_value))
    for grad, full_grad, expected_grad in zip(grads, full_grads, nt_xent_reference_grads(temperature)):
        assert np.all(np.isfinite(grad))
        assert_relative_close(grad / DEVICES, full_grad)
        assert_relative_close(grad / DEVICES, expected_grad)


def test_nt_xent_sharded_parameter_gradient_pmean_is_full_batch(pairs):
    """What a training step does: pmean of per-device parameter gradients equals the 1-device one."""
    z1, z2 = pairs
    weights = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)

    def loss(w, a, b, axis_name):
        return nt_xent(jnp.tanh(a @ w), jnp.tanh(b @ w), 0.2, axis_name)

    def per_device(w, a, b):
        return jax.lax.pmean(jax.grad(loss)(w, a, b, DATA_AXIS), DATA_AXIS)

    function = jax.shard_map(per_device, mesh=make_mesh(), check_vma=False,
                             in_specs=(PartitionSpec(), PartitionSpec(DATA_AXIS), PartitionSpec(DATA_AXIS)),
                             out_specs=PartitionSpec())
    sharded_grad = jax.jit(function)(weights, z1, z2)
    full_grad = jax.grad(loss)(weights, z1, z2, None)
    assert_relative_close(sharded_grad, full_grad)


@pytest.fixture(scope="module")
def moco_inputs():
    rng = np.random.default_rng(2)
    query = rng.normal(size=(16, 5)).astype(np.float32)
    key = (query + 0.5 * rng.normal(size=query.shape)).astype(np.float32)
    queue = rng.normal(size=(12, 5)).astype(np.float32)
    return query, key, queue


def test_info_nce_single_device_matches_numpy(moco_inputs):
    query, key, queue = moco_inputs
    value, grads = jax.value_and_grad(info_nce, argnums=(0, 1, 2))(query, key, queue, 0.2)
    assert_relative_close(value, info_nce_reference(query, key, queue, 0.2))
    expected_grads = numpy_grad(lambda q, k, n: info_nce_reference(q, k, n, 0.2), [query, key, queue])
    for grad, expected_grad in zip(grads, expected_grads):
        assert_relative_close(grad, expected_grad)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_info_nce_sharded_equals_full_batch(moco_inputs, impl):
    query, key, queue = moco_inputs

    def per_device(q, k):
        return jax.value_and_grad(info_nce, argnums=(0, 1))(q, k, queue, 0.07, DATA_AXIS)

    values, grads = sharded(per_device, impl, query, key)
    full_value, full_grads = jax.value_and_grad(info_nce, argnums=(0, 1))(query, key, queue, 0.07)
    assert_relative_close(values, np.full(DEVICES, info_nce_reference(query, key, queue, 0.07)))
    assert_relative_close(values, np.full(DEVICES, full_value))
    for grad, full_grad in zip(grads, full_grads):
        assert_relative_close(grad / DEVICES, full_grad)


def test_nt_xent_is_invariant_to_scale_and_symmetric(pairs):
    z1, z2 = pairs
    chex.assert_trees_all_close(nt_xent(z1, z2, 0.5), nt_xent(3.0 * z1, z2, 0.5), rtol=1e-6)
    chex.assert_trees_all_close(nt_xent(z1, z2, 0.5), nt_xent(z2, z1, 0.5), rtol=1e-6)


def clip_reference(images, texts, logit_scale):
    """CLIP's loss row by row in float64: each image against every text, each text against every image."""
    images, texts = (_normalize(np.asarray(x, np.float64)) for x in (images, texts))
    scale = np.exp(np.float64(logit_scale))
    count = images.shape[0]
    image_losses, text_losses = [], []
    for k in range(count):
        image_logits = np.array([scale * images[k] @ texts[j] for j in range(count)])
        text_logits = np.array([scale * texts[k] @ images[j] for j in range(count)])
        image_losses.append(-np.log(np.exp(image_logits[k]) / np.sum(np.exp(image_logits))))
        text_losses.append(-np.log(np.exp(text_logits[k]) / np.sum(np.exp(text_logits))))
    return (np.mean(image_losses) + np.mean(text_losses)) / 2


def make_image_text_pairs():
    rng = np.random.default_rng(3)
    images = rng.normal(size=(16, 6)).astype(np.float32)  # 2 pairs per device, different on each
    texts = (images + 0.7 * rng.normal(size=images.shape)).astype(np.float32)
    return images, texts


@pytest.fixture(scope="module")
def image_text_pairs():
    return make_image_text_pairs()


@functools.lru_cache(maxsize=None)
def clip_reference_grads(logit_scale):
    """Finite-difference gradients of the float64 reference with respect to the images, the texts and
    the logit scale at `make_image_text_pairs()` (computed once per scale)."""
    return numpy_grad(clip_reference, list(make_image_text_pairs()) + [np.array(logit_scale)])


CLIP_INITIAL_SCALE = float(np.log(1 / 0.07))
CLIP_MAXIMUM_SCALE = float(np.log(100.0))


@pytest.mark.parametrize("logit_scale", [0.0, CLIP_INITIAL_SCALE, CLIP_MAXIMUM_SCALE])
def test_clip_loss_single_device_matches_numpy(image_text_pairs, logit_scale):
    images, texts = image_text_pairs
    value, grads = jax.value_and_grad(clip_loss, argnums=(0, 1, 2))(
        images, texts, jnp.float32(logit_scale))
    assert_relative_close(value, clip_reference(images, texts, logit_scale))
    for grad, expected_grad in zip(grads, clip_reference_grads(logit_scale)):
        assert_relative_close(grad, expected_grad)


@pytest.mark.parametrize("logit_scale", [CLIP_INITIAL_SCALE, CLIP_MAXIMUM_SCALE])
@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_clip_loss_sharded_equals_full_batch(image_text_pairs, impl, logit_scale):
    """Every device returns the global loss; its embedding gradients divided by the device count are
    the full-batch gradients of its rows, and the mean over devices of its logit-scale gradient (what
    `lax.pmean` of a replicated parameter's gradient gives) is the full-batch ∂L/∂t."""
    images, texts = image_text_pairs
    scales = np.full(DEVICES, logit_scale, np.float32)  # one copy per device, as a replicated parameter

    def per_device(a, b, t):
        loss = lambda a, b, t: clip_loss(a, b, t[0], DATA_AXIS)
        return jax.value_and_grad(loss, argnums=(0, 1, 2))(a, b, t)

    values, grads = sharded(per_device, impl, images, texts, scales)
    full_value, full_grads = jax.value_and_grad(clip_loss, argnums=(0, 1, 2))(
        images, texts, jnp.float32(logit_scale))
    expected_grads = clip_reference_grads(logit_scale)
    assert_relative_close(values, np.full(DEVICES, clip_reference(images, texts, logit_scale)))
    assert_relative_close(values, np.full(DEVICES, full_value))
    for grad, full_grad, expected_grad in zip(grads[:2], full_grads[:2], expected_grads[:2]):
        assert np.all(np.isfinite(grad))
        assert_relative_close(grad / DEVICES, full_grad)
        assert_relative_close(grad / DEVICES, expected_grad)
    assert_relative_close(np.mean(grads[2]), full_grads[2])
    assert_relative_close(np.mean(grads[2]), expected_grads[2])


def test_clip_loss_sharded_parameter_gradient_pmean_is_full_batch(image_text_pairs):
    """What a training step does: pmean of the per-device gradients of both encoders' weights and of the
    replicated logit scale equals the 1-device gradients."""
    images, texts = image_text_pairs
    rng = np.random.default_rng(4)
    image_weights, text_weights = (rng.normal(size=(6, 5)).astype(np.float32) for _ in range(2))
    logit_scale = np.float32(CLIP_INITIAL_SCALE)

    def loss(image_w, text_w, t, a, b, axis_name):
        return clip_loss(jnp.tanh(a @ image_w), jnp.tanh(b @ text_w), t, axis_name)

    def per_device(image_w, text_w, t, a, b):
        grads = jax.grad(loss, argnums=(0, 1, 2))(image_w, text_w, t, a, b, DATA_AXIS)
        return jax.lax.pmean(grads, DATA_AXIS)

    replicated, split = PartitionSpec(), PartitionSpec(DATA_AXIS)
    function = jax.shard_map(per_device, mesh=make_mesh(), check_vma=False, out_specs=replicated,
                             in_specs=(replicated, replicated, replicated, split, split))
    sharded_grads = jax.jit(function)(image_weights, text_weights, logit_scale, images, texts)
    full_grads = jax.grad(loss, argnums=(0, 1, 2))(
        image_weights, text_weights, logit_scale, images, texts, None)
    for sharded_grad, full_grad in zip(sharded_grads, full_grads):
        assert_relative_close(sharded_grad, full_grad)


def test_clip_loss_is_symmetric_and_invariant_to_scale(image_text_pairs):
    images, texts = image_text_pairs
    loss = clip_loss(images, texts, CLIP_INITIAL_SCALE)
    chex.assert_trees_all_close(clip_loss(texts, images, CLIP_INITIAL_SCALE), loss, rtol=1e-6)
    chex.assert_trees_all_close(clip_loss(3.0 * images, 0.5 * texts, CLIP_INITIAL_SCALE), loss, rtol=1e-6)


@pytest.mark.parametrize("logit_scale", [0.0, float(np.log(2.0))])
def test_clip_loss_orthogonal_pairs_closed_form(logit_scale):
    """Image k and text k both along axis k: every positive logit is e^t, every other 0, so each row
    loses log(1 + (N − 1)·exp(−e^t))."""
    images = np.eye(16, dtype=np.float32)
    texts = 2.5 * np.eye(16, dtype=np.float32)
    expected = np.log1p(15 * np.exp(-np.exp(logit_scale)))
    assert_relative_close(clip_loss(images, texts, logit_scale), expected, rtol=1e-6)


def test_clip_loss_aligned_pairs_at_maximum_scale_is_near_zero():
    """Orthogonal aligned pairs at the clipped scale 100: the loss is log(1 + 15·e^−100) ≈ 6e−43."""
    images = np.eye(16, dtype=np.float32)
    assert float(clip_loss(images, 2.5 * images, CLIP_MAXIMUM_SCALE)) < 1e-6


@pytest.mark.parametrize("impl", ["single", "shard_map"])
def test_clip_loss_identical_embeddings_is_log_global_batch(image_text_pairs, impl):
    """Every image and text the same vector: all logits are equal, so each row loses ln N with N the
    GLOBAL batch (16), on 1 device and on every one of 8 devices (not ln of the local batch, 2)."""
    row = image_text_pairs[0][:1]
    images = np.repeat(row, 16, axis=0)
    texts = np.repeat(-2.0 * row, 16, axis=0)
    if impl == "single":
        values = clip_loss(images, texts, CLIP_MAXIMUM_SCALE)
    else:
        values, _ = sharded(lambda a, b: (clip_loss(a, b, CLIP_MAXIMUM_SCALE, DATA_AXIS), []),
                            "shard_map", images, texts)
    assert_relative_close(values, np.full(np.shape(values), np.log(16.0)), rtol=1e-6)
