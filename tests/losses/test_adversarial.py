"""The GAN losses against NumPy float64 written from their formulas with the sigmoid, their limits at
saturated logits, and the gradient of the generator's loss with respect to D(G(z)): −1/D for the
non-saturating loss, −1/(1 − D) for the minimax one, the lecture's reason to prefer the former."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax import gradcheck, losses
from visionax.errors import UserError


def sigmoid(logits):
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))


def reference_discriminator(logits_real, logits_fake):
    return -np.mean(np.log(sigmoid(logits_real))) - np.mean(np.log(1.0 - sigmoid(logits_fake)))


def reference_generator(logits_fake, kind):
    probabilities = sigmoid(logits_fake)
    return -np.mean(np.log(probabilities)) if kind == "non_saturating" else np.mean(np.log(1.0 - probabilities))


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return (rng.normal(size=(16, 1)) * 3).astype(np.float32), (rng.normal(size=(12, 1)) * 3).astype(np.float32)


def test_losses_equal_float64_references_written_with_the_sigmoid(logits):
    real, fake = logits
    np.testing.assert_allclose(float(losses.discriminator_loss(real, fake)), reference_discriminator(real, fake),
                               rtol=1e-6)
    for kind in ("non_saturating", "minimax"):
        np.testing.assert_allclose(float(losses.generator_loss(fake, kind)), reference_generator(fake, kind), rtol=1e-6)
    np.testing.assert_allclose(float(losses.generator_loss(fake)), reference_generator(fake, "non_saturating"),
                               rtol=1e-6)  # the default kind
    real64, fake64 = real.astype(np.float64), fake.astype(np.float64)
    np.testing.assert_allclose(float(losses.ls_discriminator_loss(real, fake)),
                               0.5 * np.mean((real64 - 1) ** 2) + 0.5 * np.mean(fake64 ** 2), rtol=1e-6)
    np.testing.assert_allclose(float(losses.ls_generator_loss(fake)), 0.5 * np.mean((fake64 - 1) ** 2), rtol=1e-6)
    with jax.enable_x64(True):  # float64 in, float64 computed
        real_x64, fake_x64 = jnp.asarray(real, jnp.float64), jnp.asarray(fake, jnp.float64)
        np.testing.assert_allclose(float(losses.discriminator_loss(real_x64, fake_x64)),
                                   reference_discriminator(real, fake), rtol=1e-13)
        for kind in ("non_saturating", "minimax"):
            np.testing.assert_allclose(float(losses.generator_loss(fake_x64, kind)), reference_generator(fake, kind),
                                       rtol=1e-13)


def test_saturated_logits_give_the_limits_and_finite_gradients():
    """At ±10⁴, where σ rounds to 0 or 1 and a two-step log(σ) gives ∞: −log σ(l) → −l (l → −∞),
    → 0 (l → ∞)."""
    big = 1e4
    high, low = jnp.full((4,), big), jnp.full((4,), -big)
    cases = {
        "discriminator right": (losses.discriminator_loss(high, low), 0.0),
        "discriminator wrong": (losses.discriminator_loss(low, high), 2 * big),
        "non-saturating, D(G(z)) → 0": (losses.generator_loss(low, "non_saturating"), big),
        "non-saturating, D(G(z)) → 1": (losses.generator_loss(high, "non_saturating"), 0.0),
        "minimax, D(G(z)) → 0": (losses.generator_loss(low, "minimax"), 0.0),
        "minimax, D(G(z)) → 1": (losses.generator_loss(high, "minimax"), -big),
        "least squares D": (losses.ls_discriminator_loss(high, low), 0.5 * (big - 1) ** 2 + 0.5 * big ** 2),
        "least squares G": (losses.ls_generator_loss(low), 0.5 * (big + 1) ** 2),
    }
    for name, (value, limit) in cases.items():
        assert np.isfinite(float(value)) and float(value) == pytest.approx(limit, rel=1e-6, abs=1e-6), name
    # Gradients in the logits, (1/n)·(σ(l) − 1) and so on: finite and at their limits ±1/n or 0.
    grads = {
        "discriminator": jax.grad(losses.discriminator_loss, argnums=(0, 1))(low, high),
        "non-saturating": jax.grad(losses.generator_loss)(low, "non_saturating"),
        "minimax": jax.grad(losses.generator_loss)(low, "minimax"),
    }
    np.testing.assert_array_equal(np.asarray(grads["discriminator"]), [[-0.25] * 4, [0.25] * 4])
    np.testing.assert_array_equal(np.asarray(grads["non-saturating"]), [-0.25] * 4)
    np.testing.assert_array_equal(np.asarray(grads["minimax"]), [0.0] * 4)


def logit(probability):
    return jnp.log(probability) - jnp.log1p(-probability)


def loss_of_d(kind):
    """The generator's loss as a function of D(G(z)) `[n]`, through the logit log D − log(1 − D)."""
    return lambda probability: losses.generator_loss(logit(probability), kind)


def test_generator_gradient_in_d_is_minus_one_over_d_or_one_minus_d():
    """∂L/∂D_i = −1/(n D_i) for −mean log D and −1/(n (1 − D_i)) for mean log(1 − D): by the chain rule
    through the logit (jax.grad) and by centred finite differences in float64."""
    probabilities = np.array([1e-3, 0.02, 0.3, 0.5, 0.8, 0.97], np.float64)
    n = len(probabilities)
    expected = {"non_saturating": -1.0 / (n * probabilities), "minimax": -1.0 / (n * (1.0 - probabilities))}
    with jax.enable_x64(True):
        for kind, analytic in expected.items():
            chain_rule = np.asarray(jax.grad(loss_of_d(kind))(jnp.asarray(probabilities)))
            np.testing.assert_allclose(chain_rule, analytic, rtol=1e-9)
            numeric = gradcheck.numeric_grad(loss_of_d(kind), probabilities, h=1e-7)
            np.testing.assert_allclose(numeric, analytic, rtol=1e-5)


def test_minimax_gradient_vanishes_where_the_generator_is_poor():
    """As D(G(z)) → 0 the gradient reaching the generator (through the logit) is −D → 0 for the minimax
    loss and −(1 − D) → −1 for the non-saturating one; in D itself the minimax slope stays near −1
    while the non-saturating one grows as −1/D."""
    probabilities = jnp.array([0.1, 1e-2, 1e-3, 1e-4])
    through_logit = {kind: np.asarray(jax.grad(losses.generator_loss)(logit(probabilities), kind)) * 4
                     for kind in ("non_saturating", "minimax")}
    np.testing.assert_allclose(through_logit["minimax"], -np.asarray(probabilities), rtol=1e-4)
    np.testing.assert_allclose(through_logit["non_saturating"], -(1 - np.asarray(probabilities)), rtol=1e-4)
    assert np.all(np.diff(np.abs(through_logit["minimax"])) < 0)  # shrinking toward 0
    in_d = {kind: np.asarray(jax.grad(loss_of_d(kind))(probabilities)) * 4 for kind in ("non_saturating", "minimax")}
    assert np.all(np.diff(np.abs(in_d["non_saturating"])) > 0) and abs(in_d["non_saturating"][-1]) > 9e3
    np.testing.assert_allclose(in_d["minimax"], -1 / (1 - np.asarray(probabilities)), rtol=1e-4)


def test_an_unknown_kind_is_one_line():
    with pytest.raises(UserError,
                       match="unknown generator loss kind 'wasserstein'; choose one of non_saturating, minimax"):
        losses.generator_loss(jnp.zeros(3), "wasserstein")
