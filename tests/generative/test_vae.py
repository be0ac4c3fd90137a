"""The VAE's formulas against NumPy float64, closed forms, Monte Carlo estimates and finite differences:
the reparameterised sample, the Gaussian KL, the decoders' log-likelihoods, the ELBO and the
importance-weighted NLL (on models whose marginal likelihood is known), and the training step and the
evaluation over the mesh against a direct computation."""

import functools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import special, stats

from visionax import gradcheck, parallel
from visionax.data.builders.digits import source_digits
from visionax.errors import UserError
from visionax.generative import vae
from visionax.train.state import TrainState


def test_reparameterize_is_the_mean_plus_the_standard_deviation_times_the_keys_noise():
    mean = jnp.array([[1.5, -2.0, 0.0], [0.3, 4.0, -1.0]])
    logvar = jnp.array([[2 * math.log(3.0), 2 * math.log(0.5), 0.0], [-1.0, 1.0, 3.0]])
    key = jax.random.PRNGKey(7)
    epsilon = np.asarray(jax.random.normal(key, mean.shape), np.float64)
    expected = np.asarray(mean, np.float64) + np.exp(np.asarray(logvar, np.float64) / 2) * epsilon
    np.testing.assert_allclose(np.asarray(vae.reparameterize(key, mean, logvar)), expected, rtol=1e-6, atol=1e-6)
    # Over many keys the draws have mean μ and standard deviation σ = exp(logvar / 2) (σ = 3 and 0.5 in the
    # first row: exp(logvar) would give 9 and 0.25), each within 4 standard errors.
    count = 40_000
    draws = np.asarray(jax.vmap(lambda k: vae.reparameterize(k, mean, logvar))(jax.random.split(key, count)),
                       np.float64)
    sigma = np.exp(np.asarray(logvar, np.float64) / 2)
    assert np.all(np.abs(draws.mean(0) - np.asarray(mean)) < 4 * sigma / math.sqrt(count))
    assert np.all(np.abs(draws.std(0) - sigma) < 4 * sigma / math.sqrt(2 * count))


def test_gaussian_kl_equals_the_closed_form_a_monte_carlo_estimate_and_finite_differences():
    rng = np.random.default_rng(0)
    mean, logvar = rng.normal(size=(4, 5)), rng.normal(scale=0.7, size=(4, 5))
    expected = 0.5 * np.sum(mean**2 + np.exp(logvar) - logvar - 1, axis=1)
    kl = vae.gaussian_kl(jnp.asarray(mean, jnp.float32), jnp.asarray(logvar, jnp.float32))
    np.testing.assert_allclose(np.asarray(kl), expected, rtol=1e-5)
    # E_q[log q(z) − log p(z)] over 100,000 draws of z ~ q, densities in float64 (scipy), within 4 SEs.
    count = 100_000
    z = np.asarray(jax.vmap(lambda k: vae.reparameterize(k, jnp.asarray(mean[0], jnp.float32),
                                                         jnp.asarray(logvar[0], jnp.float32)))(
        jax.random.split(jax.random.PRNGKey(0), count)), np.float64)
    sigma = np.exp(logvar[0] / 2)
    log_ratio = stats.norm.logpdf(z, mean[0], sigma).sum(1) - stats.norm.logpdf(z).sum(1)
    assert abs(log_ratio.mean() - expected[0]) < 4 * log_ratio.std() / math.sqrt(count)
    np.testing.assert_allclose(np.asarray(vae.gaussian_log_density(jnp.asarray(z[:5]), mean[0], logvar[0])),
                               stats.norm.logpdf(z[:5], mean[0], sigma).sum(1), rtol=1e-6)
    gradcheck.assert_grad_close(lambda p: jnp.sum(vae.gaussian_kl(p["mean"], p["logvar"]) ** 2),
                                {"mean": mean[:2], "logvar": logvar[:2]}, tol=1e-6)


def test_bernoulli_log_likelihood_equals_float64_and_stays_finite_at_extreme_logits():
    rng = np.random.default_rng(1)
    logits, targets = rng.normal(scale=4.0, size=(3, 4, 4, 2)), rng.uniform(size=(3, 4, 4, 2))
    expected = np.sum(targets * np.log(special.expit(logits)) + (1 - targets) * np.log(special.expit(-logits)),
                      axis=(1, 2, 3))
    np.testing.assert_allclose(np.asarray(vae.bernoulli_log_likelihood(jnp.asarray(logits, jnp.float32), targets)),
                               expected, rtol=1e-5)
    # Where σ(l) rounds to 0 or 1 in float32 the log-likelihood is still −|l| for the wrong target.
    extreme = jnp.array([[200.0, -200.0, 1e4, -1e4, 30.0]])
    values = vae.bernoulli_log_likelihood(extreme, jnp.array([[0.0, 1.0, 0.0, 1.0, 1.0]]))
    np.testing.assert_allclose(np.asarray(values), [-(200 + 200 + 1e4 + 1e4 + math.log1p(math.exp(-30)))], rtol=1e-6)


def discretized_logistic_float64(mean, log_scale, targets, levels):
    """log P(k) per sub-pixel from the CDF differences F(x + h) − F(x − h) in float64, edge bins taking
    the tails; right of the mean as the difference of the upper tails 1 − F, which do not cancel."""
    half_bin = 1.0 / (levels - 1)
    x = 2.0 * targets / (levels - 1) - 1.0
    scale = np.exp(log_scale)
    upper, lower = (x + half_bin - mean) / scale, (x - half_bin - mean) / scale
    cdf_difference = (np.where(targets == levels - 1, 1.0, special.expit(upper))
                      - np.where(targets == 0, 0.0, special.expit(lower)))
    tail_difference = (np.where(targets == 0, 1.0, special.expit(-lower))
                       - np.where(targets == levels - 1, 0.0, special.expit(-upper)))
    return np.log(np.where(x > mean, tail_difference, cdf_difference))


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_discretized_logistic_equals_float64_and_its_bins_sum_to_one(levels):
    rng = np.random.default_rng(levels)
    shape = (3, 4, 4, 3)
    mean, log_scale = rng.uniform(-1.2, 1.2, size=shape), rng.uniform(-3.5, 0.5, size=shape)
    targets = rng.integers(0, levels, size=shape)
    targets[0, 0, 0] = [0, levels - 1, levels // 2]  # both edge bins and a middle one
    expected = discretized_logistic_float64(mean, log_scale, targets, levels).sum(axis=(1, 2, 3))
    values = vae.discretized_logistic_log_likelihood(jnp.asarray(mean, jnp.float32),
                                                     jnp.asarray(log_scale, jnp.float32), targets, levels)
    np.testing.assert_allclose(np.asarray(values), expected, rtol=2e-5)
    # The probabilities of all `levels` bins sum to 1 for any mean and scale, extreme ones included.
    means = np.array([-50.0, -1.0, -0.3, 0.0, 0.7, 1.0, 1.02, 80.0])
    log_scales = np.array([-12.0, -7.0, -2.0, 0.0, 3.0, 12.0, -4.0, 1.0])
    every_level = np.arange(levels)[:, None]
    log_probabilities = jax.vmap(lambda m, s: vae.discretized_logistic_log_likelihood(
        jnp.full((levels, 1), m, jnp.float32), jnp.full((levels, 1), s, jnp.float32), every_level, levels))(
        jnp.asarray(means, jnp.float32), jnp.asarray(log_scales, jnp.float32))
    assert np.all(np.isfinite(log_probabilities))
    np.testing.assert_allclose(np.exp(np.asarray(log_probabilities, np.float64)).sum(axis=1), 1.0, atol=1e-5)
    # Edge bins: P(0) = F(−1 + h), P(L−1) = 1 − F(1 − h) with F the logistic CDF.
    h, m, s = 1.0 / (levels - 1), means[2], math.exp(log_scales[2])
    np.testing.assert_allclose(np.exp(np.asarray(log_probabilities[2, [0, -1]], np.float64)),
                               [special.expit((-1 + h - m) / s), special.expit(-(1 - h - m) / s)], rtol=1e-5)


def test_discretized_logistic_is_finite_at_extremes_and_its_gradient_matches_finite_differences():
    # A mean far from its target with a tiny scale: log P is −(distance / s), large but finite; the
    # gradient is finite too (no log of a CDF difference that rounds to 0).
    mean, log_scale = jnp.array([[5.0, -5.0, 0.0]]), jnp.array([[-9.0, -9.0, 9.0]])
    targets = jnp.array([[3, 10, 8]])
    value, grads = jax.value_and_grad(lambda m, s: jnp.sum(vae.discretized_logistic_log_likelihood(m, s, targets, 17)),
                                      argnums=(0, 1))(mean, log_scale)
    assert np.isfinite(value) and value < -1e4 and all(np.all(np.isfinite(g)) for g in grads)
    rng = np.random.default_rng(3)
    targets = np.array([[0, 4, 9, 16, 12, 1]])
    params = {"mean": rng.uniform(-1, 1, (1, 6)), "log_scale": rng.uniform(-3, 0, (1, 6))}
    gradcheck.assert_grad_close(
        lambda p: jnp.sum(vae.discretized_logistic_log_likelihood(p["mean"], p["log_scale"], targets, 17)),
        params, tol=1e-6)


def test_targets_outside_the_decoders_range_are_one_line_user_errors():
    raw_digits = np.asarray(source_digits()[0][:2], np.float32)[..., None] * 16 / 255  # 0..16
    with pytest.raises(UserError, match=r"range over \[0, 16\].*digits are 0\.\.16, not 0\.\.1") as error:
        vae.bernoulli_log_likelihood(jnp.zeros(raw_digits.shape), raw_digits)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"integer levels 0\.\.16 but range over \[0, 255\]; quantise") as error:
        vae.discretized_logistic_log_likelihood(jnp.zeros((1, 3)), jnp.zeros((1, 3)), np.array([[0, 17, 255]]), 17)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match=r"range over \[0, 0\.5\] with fractions"):
        vae.discretized_logistic_log_likelihood(jnp.zeros((1, 2)), jnp.zeros((1, 2)), np.array([[0.0, 0.5]]), 17)
    # Inside the range nothing is raised, and under jit (traced values) nothing is looked at.
    jax.jit(vae.bernoulli_log_likelihood)(jnp.zeros((1, 3)), jnp.array([[0.0, 0.5, 1.0]]))


class LinearGaussian:
    """p(z) = N(0, I₂), p(x|z) = N(Wz + b, σ²I₃) with orthogonal columns of W, so that the posterior is
    the diagonal Gaussian N(Σ Wᵀ(x − b)/σ², Σ), Σ = (I + WᵀW/σ²)⁻¹, and p(x) = N(b, WWᵀ + σ²I)."""

    def __init__(self):
        basis, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
        self.weights = basis[:, :2] * np.array([1.5, 0.8])
        self.bias, self.noise = np.array([0.2, -0.1, 0.4]), 0.5
        self.posterior_variance = 1.0 / (1.0 + np.sum(self.weights**2, axis=0) / self.noise**2)

    def log_marginal(self, x):
        covariance = self.weights @ self.weights.T + self.noise**2 * np.eye(3)
        return stats.multivariate_normal(self.bias, covariance).logpdf(x)

    def encode(self, x, shift=0.0, widen=0.0):
        mean = (x - self.bias) @ self.weights / self.noise**2 * self.posterior_variance
        logvar = jnp.broadcast_to(jnp.log(self.posterior_variance), mean.shape)
        return (mean + shift).astype(jnp.float32), (logvar + widen).astype(jnp.float32)

    def log_likelihood(self, z, x):
        return jnp.sum(jax.scipy.stats.norm.logpdf(x, z @ self.weights.T + self.bias, self.noise), axis=-1)


def test_importance_weighted_nll_with_one_sample_is_that_samples_negative_elbo():
    model = LinearGaussian()
    x = jnp.asarray(np.random.default_rng(1).normal(size=(5, 3)), jnp.float32)
    encode = functools.partial(model.encode, shift=0.4, widen=0.8)
    keys = vae.example_keys(jax.random.PRNGKey(0), jnp.arange(5))
    mean, logvar = encode(x)
    z = jax.vmap(lambda key, m, v: vae.reparameterize(jax.random.fold_in(key, 0), m, v))(keys, mean, logvar)
    one_sample = (model.log_likelihood(z, x) + vae.gaussian_log_density(z, 0 * z, 0 * z)
                  - vae.gaussian_log_density(z, mean, logvar))
    iwae = vae.importance_weighted_nll(encode, model.log_likelihood, x, keys, k=1)
    np.testing.assert_allclose(np.asarray(iwae), -np.asarray(one_sample), rtol=1e-6)
    samples = vae.importance_samples(encode, model.log_likelihood, x, keys, k=1)
    np.testing.assert_allclose(np.asarray(samples.negative_elbo),
                               -np.asarray(model.log_likelihood(z, x) - vae.gaussian_kl(mean, logvar)), rtol=1e-6)


def test_importance_weighted_nll_falls_toward_the_exact_marginal_as_k_grows():
    model = LinearGaussian()
    x = np.random.default_rng(2).normal(size=(4, 3))
    exact = -model.log_marginal(x)
    # With the exact posterior every weight p(x|z)p(z)/q(z|x) is p(x): every estimate equals −log p(x).
    keys = vae.example_keys(jax.random.PRNGKey(1), jnp.arange(4))
    for k in (1, 7):
        np.testing.assert_allclose(np.asarray(vae.importance_weighted_nll(model.encode, model.log_likelihood,
                                                                          jnp.asarray(x), keys, k)), exact, rtol=1e-5)
    # A wrong q (shifted, too wide): the mean estimate over 250 repeats falls with k, from the negative
    # ELBO at k = 1 (closed form: E_q log p(x|z) for a linear Gaussian, minus the KL) to −log p(x).
    repeats = 250
    batch = jnp.asarray(np.tile(x, (repeats, 1)))
    encode = functools.partial(model.encode, shift=0.4, widen=0.8)
    keys = vae.example_keys(jax.random.PRNGKey(2), jnp.arange(len(batch)))
    log_weights = np.asarray(vae.importance_samples(encode, model.log_likelihood, batch, keys, 1000).log_weights,
                             np.float64)  # the estimate with k draws reads the first k
    np.testing.assert_allclose(np.asarray(vae.importance_weighted_nll(encode, model.log_likelihood, batch, keys, 10)),
                               -(special.logsumexp(log_weights[:10], axis=0) - math.log(10)), rtol=1e-5)
    estimates = {k: -(special.logsumexp(log_weights[:k], axis=0) - math.log(k)).reshape(repeats, 4)
                 for k in (1, 10, 100, 1000)}
    means = {k: value.mean(0) for k, value in estimates.items()}
    errors = {k: value.std(0) / math.sqrt(repeats) for k, value in estimates.items()}
    mean, logvar = (np.asarray(part, np.float64) for part in encode(jnp.asarray(x)))
    residual = x - mean @ model.weights.T - model.bias
    expected_log_likelihood = (-1.5 * math.log(2 * math.pi * model.noise**2) - 0.5 * (
        np.sum(residual**2, 1) + np.exp(logvar) @ np.sum(model.weights**2, 0)) / model.noise**2)
    negative_elbo = -(expected_log_likelihood - 0.5 * np.sum(mean**2 + np.exp(logvar) - logvar - 1, axis=1))
    assert np.all(np.abs(means[1] - negative_elbo) < 4 * errors[1])
    assert np.all(negative_elbo - exact > 0.3)  # the bound is loose by KL(q ‖ p(z|x))
    for smaller, larger in ((1, 10), (10, 100)):
        assert np.all(means[larger] < means[smaller] - 2 * (errors[smaller] + errors[larger])), (smaller, means)
    assert np.all(means[1000] <= means[100])
    assert np.all(means[1000] - exact < 0.03) and np.all(means[1000] - exact > -4 * errors[1000])


def test_a_decoder_that_ignores_z_with_q_the_prior_gives_the_exact_nll_at_every_k():
    constant = -17.25
    encode = lambda x: (jnp.zeros((len(x), 3)), jnp.zeros((len(x), 3)))  # noqa: E731
    log_likelihood = lambda z, x: jnp.full(len(x), constant)  # noqa: E731
    keys = vae.example_keys(jax.random.PRNGKey(3), jnp.arange(2))
    for k in (1, 9, 100):
        np.testing.assert_allclose(np.asarray(vae.importance_weighted_nll(encode, log_likelihood, jnp.zeros((2, 1)),
                                                                          keys, k)), -constant, rtol=1e-6)


@pytest.fixture(scope="module")
def tiny_vae():
    """A width-4 VAE with a 2-D latent on 8×8 digits, its parameters, and 16 training digits."""
    images = source_digits()[0][:16, :, :, None]
    model = vae.VAE((8, 8, 1), latent_size=2, width=4, decoder_name="discretized_logistic", levels=17)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(images[:1]))["params"]
    return model, params, images


def test_the_training_step_on_8_devices_is_one_adam_update_of_the_direct_negative_elbo(tiny_vae):
    """Metrics and parameters after one step over 8 devices (2 examples each) equal a direct computation
    on the whole batch with each example's key fold_in(step key, global index)."""
    model, params, images = tiny_vae
    tx = optax.adam(1e-2)
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                       rng=jax.random.PRNGKey(5), apply_fn=model.apply, tx=tx)
    data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:8]))
    step = data_parallel.step(functools.partial(vae.train_step, model=model), donate=False)
    new_state, metrics = step(data_parallel.put_state(state), data_parallel.put_batch({"image": images}))
    _, step_rng = jax.random.split(state.rng)
    keys = vae.example_keys(step_rng, jnp.arange(16))

    def negative_elbo(params):
        terms = vae.elbo(lambda x: model.apply({"params": params}, x, method=vae.VAE.encode),
                         lambda z, x: model.apply({"params": params}, z, x, method=vae.VAE.log_likelihood),
                         jnp.asarray(images), keys)
        return -jnp.mean(terms.elbo), terms

    (loss, terms), grads = jax.jit(jax.value_and_grad(negative_elbo, has_aux=True))(params)
    assert 0 < float(jnp.mean(terms.kl))
    chex.assert_trees_all_close({name: float(value) for name, value in jax.device_get(metrics).items()},
                                {"loss": float(loss), "reconstruction": float(-jnp.mean(terms.log_likelihood)),
                                 "kl": float(jnp.mean(terms.kl))}, rtol=1e-5)
    updates, _ = tx.update(grads, tx.init(params), params)
    chex.assert_trees_all_close(jax.device_get(new_state.params), optax.apply_updates(params, updates),
                                rtol=1e-4, atol=1e-6)


def test_the_evaluation_over_8_devices_equals_1_device_and_the_direct_estimates(tiny_vae):
    """13 images in padded batches of 8 over 8 devices and of 3 over 1: the same per-image numbers as the
    estimators called once on all 13 with keys fold_in(rng, index), in nats and bits per dimension."""
    model, params, images = tiny_vae
    images, rng, k = images[:13], jax.random.PRNGKey(9), 4
    eight = vae.evaluate(parallel.DataParallel(parallel.make_mesh(jax.devices()[:8])), model, {"params": params},
                         images, rng, k=k, batch_size=8)
    one = vae.evaluate(parallel.DataParallel(parallel.make_mesh(jax.devices()[:1])), model, {"params": params},
                       images, rng, k=k, batch_size=3)
    chex.assert_trees_all_close(eight, one, rtol=1e-5)
    samples = jax.jit(lambda x, keys: vae.importance_samples(
        lambda x: model.apply({"params": params}, x, method=vae.VAE.encode),
        lambda z, x: model.apply({"params": params}, z, x, method=vae.VAE.log_likelihood), x, keys, k))(
        jnp.asarray(images), vae.example_keys(rng, jnp.arange(13)))
    iwae = np.mean(np.asarray(samples.importance_weighted_nll, np.float64))
    negative_elbo = np.mean(np.asarray(samples.negative_elbo, np.float64))
    assert iwae < negative_elbo
    chex.assert_trees_all_close(eight, {"negative_elbo_nats": negative_elbo, "iwae_nats": iwae,
                                        "negative_elbo_bits_per_dim": negative_elbo / (64 * math.log(2)),
                                        "iwae_bits_per_dim": iwae / (64 * math.log(2))}, rtol=1e-5)
