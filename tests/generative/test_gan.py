"""DCGAN's step against the round of the game written out by hand with Flax and Optax (k
discriminator updates on their own real images and fresh z, then one generator update), each
player's update leaving the other's parameters alone, and the models' sizes and ranges."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax import parallel
from visionax.errors import UserError
from visionax.generative import gan

LATENT = 5
BATCH = 8
IMAGE_SHAPE = (8, 8, 1)


def models():
    return (gan.Generator(IMAGE_SHAPE, (8, 4), bn_axis_name=parallel.DATA_AXIS), gan.Discriminator((4, 8)))


def initial_state(generator_tx=None, discriminator_tx=None):
    generator, discriminator = models()
    return gan.create_gan_state(jax.random.PRNGKey(0), generator, discriminator,
                                generator_tx or optax.adam(0.01, b1=0.5), discriminator_tx or optax.adam(0.02, b1=0.5),
                                LATENT)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(BATCH, *IMAGE_SHAPE), dtype=np.uint8)


def one_device_step(state, images, settings):
    data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:1]))
    step = data_parallel.step(functools.partial(gan.train_step, settings=settings), donate=False)
    new_state, metrics = step(data_parallel.put_state(state), data_parallel.put_batch({"image": images}))
    return jax.device_get(new_state), jax.device_get(metrics)


def cross_entropy(logits, label):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, label)))


# kind -> (discriminator loss of (real outputs, fake outputs), generator loss of fake outputs, D as reported)
REFERENCE_LOSSES = {
    "non_saturating": (lambda real, fake: cross_entropy(real, 1.0) + cross_entropy(fake, 0.0),
                       lambda fake: cross_entropy(fake, 1.0), jax.nn.sigmoid),
    "minimax": (lambda real, fake: cross_entropy(real, 1.0) + cross_entropy(fake, 0.0),
                lambda fake: -cross_entropy(fake, 0.0), jax.nn.sigmoid),
    "least_squares": (lambda real, fake: 0.5 * jnp.mean((real - 1) ** 2) + 0.5 * jnp.mean(fake ** 2),
                      lambda fake: 0.5 * jnp.mean((fake - 1) ** 2), lambda scores: scores),
}


@functools.partial(jax.jit, static_argnums=(2, 3))
def reference_round(state, images, kind, steps):
    """k = `steps` discriminator updates then one generator update, written out with Flax's apply and
    Optax's losses and updates, on one device without a mesh (the generator's BatchNorm unsynchronised)."""
    discriminator_objective, generator_objective, probability = REFERENCE_LOSSES[kind]
    generator, discriminator = models()
    generator = generator.clone(bn_axis_name=None)
    generator_tx, discriminator_tx = state.generator_tx, state.discriminator_tx
    real = jnp.asarray(images, jnp.float32) / 255.0 * 2.0 - 1.0
    rng, round_rng = jax.random.split(state.rng)
    part = BATCH // steps
    generator_variables = {"params": state.params.generator, "batch_stats": state.batch_stats.generator}
    params, opt_state, measured = state.params.discriminator, state.opt_state.discriminator, []
    for update in range(steps):
        key = jax.random.fold_in(round_rng, update)
        z = jax.vmap(lambda index, key=key: jax.random.normal(jax.random.fold_in(key, index), (LATENT,)))(
            jnp.arange(part))
        fake, _ = generator.apply(generator_variables, z, train=True, mutable=["batch_stats"])
        real_part = real[update::steps]  # the examples j, j + k, j + 2k, ...

        def loss(params, real_part=real_part, fake=fake):
            outputs_real = discriminator.apply({"params": params}, real_part)
            outputs_fake = discriminator.apply({"params": params}, fake)
            return discriminator_objective(outputs_real, outputs_fake), (outputs_real, outputs_fake)

        (value, (outputs_real, outputs_fake)), grads = jax.value_and_grad(loss, has_aux=True)(params)
        measured.append([value, jnp.mean(probability(outputs_real)), jnp.mean(probability(outputs_fake))])
        updates, opt_state = discriminator_tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
    key = jax.random.fold_in(round_rng, steps)
    z = jax.vmap(lambda index: jax.random.normal(jax.random.fold_in(key, index), (LATENT,)))(jnp.arange(BATCH))

    def generator_loss(generator_params):
        fake, updates = generator.apply({"params": generator_params, "batch_stats": state.batch_stats.generator}, z,
                                        train=True, mutable=["batch_stats"])
        return generator_objective(discriminator.apply({"params": params}, fake)), updates["batch_stats"]

    (generator_value, batch_stats), grads = jax.value_and_grad(generator_loss, has_aux=True)(state.params.generator)
    updates, generator_opt_state = generator_tx.update(grads, state.opt_state.generator, state.params.generator)
    expected = {"params": gan.Players(optax.apply_updates(state.params.generator, updates), params),
                "batch_stats": gan.Players(batch_stats, {}),
                "opt_state": gan.Players(generator_opt_state, opt_state), "rng": rng}
    means = jnp.mean(jnp.asarray(measured), axis=0)
    metrics = {"discriminator_loss": means[0], "d_real": means[1], "d_fake": means[2],
               "generator_loss": generator_value}
    return expected, metrics


@pytest.fixture(scope="module")
def full_step(images):
    """The state before and after one step (non-saturating, k = 2) on 1 device."""
    state = initial_state()
    return state, one_device_step(state, images, gan.GANSettings(LATENT, "non_saturating", 2))


def assert_equals_reference(state, new_state, metrics, images, kind, steps):
    expected, expected_metrics = reference_round(state, images, kind, steps)
    assert int(new_state.step) == 1
    for field in ("params", "batch_stats", "opt_state", "rng"):
        chex.assert_trees_all_close(getattr(new_state, field), expected[field], rtol=2e-5, atol=1e-6)
    for name, value in expected_metrics.items():
        assert float(metrics[name]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), name
    # Both players moved, and the generator's BatchNorm running averages left their init.
    for player in ("generator", "discriminator"):
        moved = jax.tree.map(lambda new, old: float(jnp.max(jnp.abs(new - old))),
                             getattr(new_state.params, player), getattr(state.params, player))
        assert min(jax.tree.leaves(moved)) > 0, player
    assert float(jnp.abs(new_state.batch_stats.generator["BatchNorm_0"]["mean"]).max()) > 0


def test_a_step_is_k_discriminator_updates_then_one_generator_update(images, full_step):
    state, (new_state, metrics) = full_step
    assert_equals_reference(state, new_state, metrics, images, "non_saturating", 2)


@pytest.mark.parametrize("kind", ["minimax", "least_squares"])
def test_the_other_games_with_one_discriminator_update(images, kind):
    state = initial_state()
    new_state, metrics = one_device_step(state, images, gan.GANSettings(LATENT, kind, 1))
    assert_equals_reference(state, new_state, metrics, images, kind, 1)


def test_each_players_update_leaves_the_other_players_parameters_alone(images, full_step):
    """With the generator's optimizer frozen, the generator's parameters stay bit for bit and the
    discriminator ends as in the full step (its k updates come first); with the discriminator's
    frozen, the discriminator's stay and the generator still moves."""
    settings = gan.GANSettings(LATENT, "non_saturating", 2)
    _, (full, _) = full_step
    frozen_generator = initial_state(generator_tx=optax.set_to_zero())
    new_state, _ = one_device_step(frozen_generator, images, settings)
    chex.assert_trees_all_equal(new_state.params.generator, frozen_generator.params.generator)
    chex.assert_trees_all_equal(new_state.params.discriminator, full.params.discriminator)
    frozen_discriminator = initial_state(discriminator_tx=optax.set_to_zero())
    new_state, _ = one_device_step(frozen_discriminator, images, settings)
    chex.assert_trees_all_equal(new_state.params.discriminator, frozen_discriminator.params.discriminator)
    moved = jax.tree.map(lambda new, old: float(jnp.max(jnp.abs(new - old))), new_state.params.generator,
                         frozen_discriminator.params.generator)
    assert min(jax.tree.leaves(moved)) > 0


def test_models_scale_with_the_image_and_count_their_parameters():
    """The 32×32×3 generator projects z to a 4×4 map for three doublings; its parameters and the
    discriminator's are the closed-form counts of its layers; the outputs lie in [−1, 1]."""
    generator = gan.Generator((32, 32, 3), (16, 8, 4))
    discriminator = gan.Discriminator((4, 8, 16))
    state = gan.create_gan_state(jax.random.PRNGKey(1), generator, discriminator, optax.sgd(0.1), optax.sgd(0.1), 7)
    counts = {player: sum(leaf.size for leaf in jax.tree.leaves(getattr(state.params, player)))
              for player in ("generator", "discriminator")}
    dense, batch_norms = 7 * 4 * 4 * 16, 2 * (16 + 8 + 4)
    transposed = 4 * 4 * 16 * 8 + 4 * 4 * 8 * 4 + (4 * 4 * 4 * 3 + 3)
    assert counts["generator"] == dense + batch_norms + transposed
    convolutions = (4 * 4 * 3 * 4 + 4) + (4 * 4 * 4 * 8 + 8) + (4 * 4 * 8 * 16 + 16)
    assert counts["discriminator"] == convolutions + (4 * 4 * 16 + 1)  # a 4×4×16 map to one logit
    z = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (6, 7))
    outputs = jax.jit(generator.apply)(state.generator_variables, z)
    assert outputs.shape == (6, 32, 32, 3) and float(jnp.max(jnp.abs(outputs))) <= 1.0
    assert float(jnp.std(outputs)) > 0
    logits = jax.jit(discriminator.apply)({"params": state.params.discriminator}, outputs)
    assert logits.shape == (6,) and float(jnp.std(logits)) > 0
    with pytest.raises(ValueError, match="not a multiple of 2\\^3"):
        gan.Generator((12, 12, 1), (8, 4, 2)).init(jax.random.PRNGKey(0), jnp.zeros((1, 3)))


def test_images_round_trip_through_the_generators_range():
    """uint8 → [−1, 1] → uint8 is the identity on all 256 values; outside [−1, 1] clips to 0 and 255."""
    values = np.arange(256, dtype=np.uint8)
    model_range = gan.to_model_range(values)
    np.testing.assert_allclose(np.asarray(model_range), values / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(gan.to_images(model_range)), values)
    np.testing.assert_array_equal(np.asarray(gan.to_images(jnp.array([-3.0, 0.0, 3.0]))), [0, 128, 255])


def test_latent_noise_depends_on_the_global_example_index_only():
    key = jax.random.PRNGKey(4)
    whole = gan.latent_noise(key, jnp.arange(6), LATENT)
    np.testing.assert_array_equal(np.asarray(gan.latent_noise(key, jnp.arange(3, 6), LATENT)), np.asarray(whole[3:]))
    np.testing.assert_array_equal(np.asarray(whole[2]), np.asarray(jax.random.normal(jax.random.fold_in(key, 2),
                                                                                      (LATENT,))))


@pytest.mark.parametrize("changes, message", [
    ({"loss": "wasserstein"}, "unknown GAN loss 'wasserstein'; choose one of non_saturating, minimax, least_squares"),
    ({"discriminator_steps": 0}, "discriminator_steps=0 must be >= 1"),
    ({"latent_dim": 0}, "latent_dim=0 must be >= 1"),
])
def test_bad_settings_are_one_line(changes, message):
    with pytest.raises(UserError, match=message):
        gan.GANSettings(**({"latent_dim": 4} | changes))
