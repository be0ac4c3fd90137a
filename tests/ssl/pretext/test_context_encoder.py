"""Context encoder inpainting: the regions against NumPy slices, the encoder's input, the completion,
L_recon and L = L_recon + λ·L_adv against float64 NumPy, the step against a float64 recomputation
of both players' updates (each player's gradient reaches only its own parameters; λ = 0 leaves the
discriminator untouched), and 8 devices equal 1 with random regions.

Steps run in float64 with a tiny encoder, decoder and discriminator (the shipped DCGAN networks
return float32): the recomputation agrees to about 1e-15.
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.ssl.pretext.checks import assert_eight_devices_equal_one
from tests.ssl.tiny import TinyEncoder, float64_state
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl.heads import ContrastiveModel
from visionax.ssl.pretext import context_encoder

IMAGE_SHAPE = (8, 8, 1)
region_masks = jax.jit(context_encoder.region_masks, static_argnums=(0, 3))
random_corners = jax.jit(context_encoder.random_corners, static_argnums=(2, 3))


def softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize("image_shape", [(8, 8, 1), (32, 32, 3), (7, 10, 2)])
def test_the_center_region_is_the_central_quarter(image_shape):
    height, width = image_shape[:2]
    expected = np.zeros((height, width, 1), np.float32)
    top, left = (height - height // 2) // 2, (width - width // 2) // 2
    expected[top:top + height // 2, left:left + width // 2] = 1
    mask = np.asarray(context_encoder.center_mask(image_shape))
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == (height // 2) * (width // 2)
    if height % 2 == 0 and width % 2 == 0:
        assert mask.mean() == 0.25
    masks = np.asarray(region_masks("center", jax.random.key(0), jnp.arange(3), image_shape))
    np.testing.assert_array_equal(masks, np.broadcast_to(expected, (3, height, width, 1)))
    np.testing.assert_array_equal(np.asarray(context_encoder.center_mask((8, 8, 1)))[2:6, 2:6, 0], 1)


def test_random_regions_are_quarter_blocks_at_uniform_positions_fixed_by_the_example_index():
    key, count = jax.random.key(3), 2500
    masks = np.asarray(region_masks("random", key, jnp.arange(count), IMAGE_SHAPE))
    corners = np.asarray(random_corners(key, jnp.arange(count), (4, 4), IMAGE_SHAPE))
    expected = np.zeros((count, 8, 8, 1), np.float32)
    for mask, (top, left) in zip(expected, corners):
        mask[top:top + 4, left:left + 4] = 1
    np.testing.assert_array_equal(masks, expected)
    assert np.all(masks.sum(axis=(1, 2, 3)) == 16)
    counts = np.bincount(corners[:, 0] * 5 + corners[:, 1], minlength=25)  # corners 0..4 in each direction
    assert len(counts) == 25 and counts.min() > 60 and counts.max() < 140  # 100 each expected
    some = np.array([3, 7, 2000])  # an example's region depends on its index, not on the batch around it
    np.testing.assert_array_equal(
        np.asarray(region_masks("random", key, jnp.asarray(some), IMAGE_SHAPE)), masks[some])


def test_masked_input_completion_and_fill_against_numpy():
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, size=(20, 6, 6, 3), dtype=np.uint8)
    images, predictions = rng.uniform(size=(2, 4, 6, 6, 3))
    masks = np.asarray(region_masks("random", jax.random.key(1), jnp.arange(4), (6, 6, 3)))
    fill = np.asarray(context_encoder.fill_values("mean", train))
    np.testing.assert_allclose(fill, (train / 255.0).mean(axis=(0, 1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(context_encoder.fill_values("zero", train)), np.zeros(3))
    inside = np.broadcast_to(masks == 1, images.shape)
    masked = np.asarray(context_encoder.masked_input(images, masks, fill))
    np.testing.assert_allclose(masked, np.where(inside, np.broadcast_to(fill, images.shape), images), rtol=1e-6)
    completed = np.asarray(context_encoder.complete(images, masks, predictions))
    np.testing.assert_allclose(completed, np.where(inside, predictions, images), rtol=1e-6)


def known_decoder(inputs):
    """A known F: the masked input turned upside down, squared, plus 0.1."""
    return jnp.flip(inputs, axis=1) ** 2 + 0.1


def test_reconstruction_loss_of_a_known_f_equals_float64_numpy():
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(5, 8, 8, 2))
    masks = np.asarray(region_masks("random", jax.random.key(2), jnp.arange(5), (8, 8, 2)))
    with jax.enable_x64(True):
        inputs = context_encoder.masked_input(jnp.asarray(images), jnp.asarray(masks, jnp.float64), 0.5)
        loss = context_encoder.reconstruction_loss(jnp.asarray(images), known_decoder(inputs), jnp.asarray(masks))
    inputs = np.where(masks == 1, 0.5, images)
    expected = np.sum(masks * (images - (np.flip(inputs, axis=1) ** 2 + 0.1)) ** 2) / 5  # summed, mean over images
    assert loss.dtype == np.float64
    np.testing.assert_allclose(loss, expected, rtol=1e-13)


@pytest.mark.parametrize("adversarial_weight", [0.0, 0.001, 0.7])
def test_the_full_loss_is_reconstruction_plus_lambda_times_the_non_saturating_loss(adversarial_weight):
    rng = np.random.default_rng(2)
    images, predictions = rng.uniform(size=(2, 6, 8, 8, 1))
    logits = rng.normal(scale=3.0, size=6)
    masks = np.asarray(region_masks("center", None, jnp.arange(6), IMAGE_SHAPE), np.float64)
    with jax.enable_x64(True):
        loss = context_encoder.context_encoder_loss(images, predictions, masks, logits, adversarial_weight)
    reconstruction = np.sum((images - predictions)[:, 2:6, 2:6] ** 2) / 6
    expected = reconstruction + adversarial_weight * np.mean(softplus(-logits))  # −log σ(l) = softplus(−l)
    np.testing.assert_allclose(loss, expected, rtol=1e-13)


@pytest.mark.parametrize("change, message", [
    ({"mask": "corner"}, "unknown mask 'corner'; choose one of center, random"),
    ({"fill": "noise"}, "unknown fill 'noise'; choose one of mean, zero"),
    ({"adversarial_weight": -0.1}, "adversarial_weight=-0.1 must be >= 0"),
])
def test_bad_settings_are_one_line_user_errors(change, message):
    with pytest.raises(UserError, match=message) as error:
        context_encoder.ContextEncoderSettings(**change)
    assert "\n" not in str(error.value)


class TinyDecoder(nn.Module):
    """Features → a dense layer → sigmoid images `[n, 8, 8, 1]`."""

    @nn.compact
    def __call__(self, features, train=False):
        return jax.nn.sigmoid(nn.Dense(64)(features)).reshape(-1, *IMAGE_SHAPE)


class TinyDiscriminator(nn.Module):
    """Images → Dense(4), tanh, Dense(1): logits `[n]`."""

    @nn.compact
    def __call__(self, images):
        hidden = jnp.tanh(nn.Dense(4)(images.reshape(images.shape[0], -1)))
        return nn.Dense(1)(hidden)[:, 0]


def tiny_model(bn_axis_name=DATA_AXIS):
    return ContrastiveModel(TinyEncoder(bn_axis_name), TinyDecoder())


def tiny_state():
    """A float64 step-0 state: the tiny encoder-decoder (SGD momentum 0.9 at 0.5) and discriminator
    (SGD momentum 0.5 at 0.3)."""
    state = context_encoder.add_discriminator(float64_state(tiny_model()), TinyDiscriminator(),
                                              optax.sgd(0.3, momentum=0.5), jax.random.key(1), IMAGE_SHAPE)
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), state.discriminator_params)
    return state.replace(discriminator_params=params, discriminator_opt_state=state.discriminator_tx.init(params))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 1), dtype=np.uint8)


FILL = np.array([0.3])


def run_step(devices, images, settings, steps=1):
    """`steps` steps of `context_encoder.train_step` on the first `devices` devices (shard_map) in
    float64: (metrics of each step, final state, initial state)."""
    data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), "shard_map")
    step = data_parallel.step(functools.partial(context_encoder.train_step, settings=settings,
                                                fill=jnp.asarray(FILL)), donate=False)
    initial = tiny_state()
    state, history = data_parallel.put_state(initial), []
    for _ in range(steps):
        state, metrics = step(state, data_parallel.put_batch({"image": images}))
        history.append(jax.device_get(data_parallel.get_state(metrics)))
    return history, jax.device_get(data_parallel.get_state(state)), jax.device_get(initial)


def compiled(function, uint8_images):
    """`function` of the uint8 images compiled, as the step computes it (XLA's x / 255 and 2x − 1 in
    float32 are up to an ulp from NumPy's order of operations), in float64."""
    return np.asarray(jax.jit(function)(uint8_images), np.float64)


def reference_update(initial, uint8_images, adversarial_weight):
    """Both players' updates and the metrics, recomputed from the uint8 images `[n, 8, 8, 1]` with
    the central regions: the discriminator's SGD step on its own loss of the real and the completed
    images (a NumPy array), then the encoder-decoder's SGD step on the gradient of L_recon + λ·L_adv
    through the updated discriminator, one `jax.grad` of the composed loss (BatchNorm over the whole
    batch); the metrics in float64 NumPy from the logits."""
    images = compiled(model_input, uint8_images)
    real = compiled(lambda uint8: 2.0 * model_input(uint8) - 1.0, uint8_images)
    masks = np.zeros_like(images)
    masks[:, 2:6, 2:6] = 1
    inputs = np.where(masks == 1, FILL, images)
    model, discriminator = tiny_model(bn_axis_name=None), TinyDiscriminator()

    def predict(params):
        return model.apply({"params": params, "batch_stats": initial.batch_stats}, inputs, train=True,
                           mutable=["batch_stats"])

    def logits(params, pictures):
        return discriminator.apply({"params": params}, pictures)

    @jax.jit
    def discriminator_update(params, fake):
        def objective(params):
            return jnp.mean(jax.nn.softplus(-logits(params, real))) + jnp.mean(jax.nn.softplus(logits(params, fake)))

        changes, _ = initial.discriminator_tx.update(jax.grad(objective)(params), initial.discriminator_opt_state)
        return optax.apply_updates(params, changes)

    @jax.jit
    def generator_update(params, discriminator_params):
        def objective(params):
            guess = predict(params)[0]
            completion = jnp.where(masks == 1, guess, images)
            return (jnp.sum(masks * (images - guess) ** 2) / len(images)
                    + adversarial_weight * jnp.mean(jax.nn.softplus(-logits(discriminator_params, 2 * completion - 1))))

        changes, _ = initial.tx.update(jax.grad(objective)(params), initial.opt_state, params)
        return optax.apply_updates(params, changes)

    predictions, updates = jax.jit(predict)(initial.params)
    predictions = np.asarray(predictions)
    fake = 2 * np.where(masks == 1, predictions, images) - 1
    discriminator_params = initial.discriminator_params
    metrics = {"reconstruction_loss": np.sum(masks * (images - predictions) ** 2) / len(images)}
    if adversarial_weight:
        real_logits, fake_logits = (np.asarray(logits(discriminator_params, pictures)) for pictures in (real, fake))
        metrics |= {"discriminator_loss": np.mean(softplus(-real_logits)) + np.mean(softplus(fake_logits)),
                    "d_real": np.mean(1 / (1 + np.exp(-real_logits))),
                    "d_fake": np.mean(1 / (1 + np.exp(-fake_logits)))}
        discriminator_params = discriminator_update(discriminator_params, fake)
        metrics["adversarial_loss"] = np.mean(softplus(-np.asarray(logits(discriminator_params, fake))))
    metrics["loss"] = metrics["reconstruction_loss"] + adversarial_weight * metrics.get("adversarial_loss", 0.0)
    params = generator_update(initial.params, discriminator_params)
    return metrics, params, discriminator_params, updates["batch_stats"]


@pytest.mark.parametrize("adversarial_weight", [0.0, 0.5])
def test_each_player_is_updated_by_its_own_loss_only(images, adversarial_weight):
    """The step equals the recomputed updates: the discriminator's by its loss alone (no gradient of the
    encoder-decoder's loss), the encoder-decoder's by L alone through the updated discriminator (no
    gradient of the discriminator's loss); with λ = 0 the discriminator's parameters and optimizer
    state are exactly the initial ones."""
    settings = context_encoder.ContextEncoderSettings(mask="center", adversarial_weight=adversarial_weight)
    with jax.enable_x64(True):
        (metrics,), state, initial = run_step(1, images, settings)
        expected, params, discriminator_params, batch_stats = reference_update(initial, images, adversarial_weight)
    assert set(metrics) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-12, err_msg=name)
    assert metrics["loss"].dtype == np.float64
    chex.assert_trees_all_close(state.params, params, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(state.batch_stats, batch_stats, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(state.discriminator_params, discriminator_params, rtol=1e-10, atol=1e-14)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(a - b)), state.discriminator_params,
                                         initial.discriminator_params))
    if adversarial_weight:
        assert min(moved) > 1e-6 and 0 < expected["adversarial_loss"] < 5
    else:
        assert max(moved) == 0
        chex.assert_trees_all_equal(state.discriminator_opt_state, initial.discriminator_opt_state)
    assert int(state.step) == 1


def test_eight_devices_equal_one_device_with_random_regions(images):
    """8 devices, 2 different images each, with each image's own random region, equal 1 device on
    all 16: both players' parameters and optimizer states and the metrics of 2 steps."""
    settings = context_encoder.ContextEncoderSettings(mask="random", adversarial_weight=0.5)
    with jax.enable_x64(True):
        one = run_step(1, images, settings, steps=2)
        history, state, _ = run_step(8, images, settings, steps=2)
    assert_eight_devices_equal_one(history, state, one, "reconstruction_loss")
    for name in ("adversarial_loss", "discriminator_loss", "d_fake"):
        np.testing.assert_allclose([metrics[name] for metrics in history],
                                   [metrics[name] for metrics in one[0]], rtol=1e-10)
    chex.assert_trees_all_close(state.discriminator_params, one[1].discriminator_params, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(state.discriminator_opt_state, one[1].discriminator_opt_state, rtol=1e-10,
                                atol=1e-12)
