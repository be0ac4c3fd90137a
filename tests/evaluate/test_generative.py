"""Sample-quality measures: the Fréchet distance against SciPy's matrix square root in float64 and a
closed form, the classifier score against its definition, and the scoring classifier's outputs
against the trained model applied directly."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import scipy.linalg

from visionax import models, parallel
from visionax.errors import UserError
from visionax.evaluate import generative
from visionax.train import checkpoint
from visionax.train.state import create_train_state


def frechet_reference(real, fake):
    mean_real, mean_fake = real.mean(0), fake.mean(0)
    cov_real, cov_fake = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = scipy.linalg.sqrtm(cov_real @ cov_fake).real
    return np.sum((mean_real - mean_fake) ** 2) + np.trace(cov_real + cov_fake - 2 * root)


def test_frechet_distance_equals_scipy_sqrtm_float64():
    rng = np.random.default_rng(0)
    mixing_real, mixing_fake = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    real = rng.normal(size=(500, 6)) @ mixing_real + 1.0
    fake = rng.normal(size=(400, 6)) @ mixing_fake - 0.5
    assert generative.frechet_distance(real, fake) == pytest.approx(frechet_reference(real, fake), rel=1e-8)
    assert generative.frechet_distance(real, real) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_diagonal_gaussians_has_its_closed_form():
    """For commuting covariances: ‖μ₁ − μ₂‖² + Σ (σ₁ − σ₂)²; checked with features whose sample
    mean and covariance are exactly the given ones."""
    rng = np.random.default_rng(1)
    white = rng.normal(size=(1000, 3))
    white = (white - white.mean(0)) @ np.linalg.inv(np.linalg.cholesky(np.cov(white, rowvar=False)).T)
    sigma_real, sigma_fake = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    real, fake = white * sigma_real + [1, 0, 0], white * sigma_fake + [0, 0, 2]
    expected = 1 + 4 + np.sum((sigma_real - sigma_fake) ** 2)
    assert generative.frechet_distance(real, fake) == pytest.approx(expected, rel=1e-9)


def test_classifier_score_follows_its_definition():
    rng = np.random.default_rng(2)
    probabilities = rng.dirichlet(np.ones(10) * 0.3, size=200)
    marginal = probabilities.mean(0)
    expected = np.exp(np.mean([np.sum(p * np.log(p / marginal)) for p in probabilities]))
    assert generative.classifier_score(probabilities) == pytest.approx(expected, rel=1e-10)
    assert generative.classifier_score(np.eye(10)[np.arange(200) % 10]) == pytest.approx(10.0)  # confident, even
    assert generative.classifier_score(np.tile(probabilities[:1], (50, 1))) == pytest.approx(1.0)  # all alike
    assert generative.class_histogram(np.eye(4)[[0, 0, 3, 1, 3, 3]]) == [2, 1, 0, 3]


def saved_classifier(workdir):
    """A small CNN (random weights, BatchNorm statistics made non-trivial) saved as a classify run."""
    config = ml_collections.ConfigDict({"model": "small_cnn", "conv_impl": "xla",
                                        "model_options": {"widths": (4, 8, 6)}})
    model = models.get_model("small_cnn", num_classes=10, widths=(4, 8, 6))
    state = create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1), (8, 8, 1))
    _, updates = model.apply(state.variables, jnp.asarray(np.random.default_rng(4).random((32, 8, 8, 1)), jnp.float32),
                             train=True, mutable=["batch_stats"])  # running statistics moved off their init
    state = state.replace(batch_stats=updates["batch_stats"])
    checkpoint.claim_workdir(workdir, config)
    manager = checkpoint.manager(workdir, keep=1, every=1)
    checkpoint.save(manager, state, force=True)
    checkpoint.wait(manager)
    manager.close()
    return model, state


def test_scoring_classifier_outputs_equal_the_model_applied_directly(tmp_path):
    model, state = saved_classifier(tmp_path)
    classifier = generative.load_scoring_classifier(tmp_path)
    images = np.random.default_rng(3).integers(0, 256, size=(20, 8, 8, 1), dtype=np.uint8)
    data_parallel = parallel.DataParallel(parallel.make_mesh())
    features, probabilities = classifier.outputs(data_parallel, images, batch_size=8)
    inputs = jnp.asarray(images, jnp.float32) / 255.0
    logits = model.apply(state.variables, inputs, train=False)
    encoder = models.get_model("small_cnn", num_classes=None, widths=(4, 8, 6))
    expected_features = encoder.apply(state.variables, inputs, train=False)
    assert np.std(features) > 0.05 and np.std(probabilities) > 1e-3  # not a degenerate network
    np.testing.assert_allclose(features, expected_features, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probabilities, jax.nn.softmax(logits), rtol=1e-5, atol=1e-7)
    scores = classifier.scores(data_parallel, images, images[::-1], batch_size=8)
    assert scores["frechet_distance"] == pytest.approx(0.0, abs=1e-3)  # the same images in another order
    assert sum(scores["class_histogram"]) == 20
    assert scores["classifier_score"] == pytest.approx(scores["real_classifier_score"])


def test_a_workdir_without_a_classify_run_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not the workdir of a classify run"):
        generative.load_scoring_classifier(tmp_path)
