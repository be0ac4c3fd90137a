"""Preprocessing fitted on train and applied to test: zero mean, unit std, identity covariance, against sklearn's PCA."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import PCA as SklearnPCA

from visionax import evaluate
from visionax.data import preprocess as P
from visionax.data.augment import ViewSettings, simclr_views
from visionax.ssl.heads import ContrastiveModel, ProjectionHead, embed
from visionax.train import supervised


@pytest.fixture
def images():
    """Correlated (N, H, W, C) images with a non-zero mean: a random linear mix of Gaussian noise."""
    rng = np.random.default_rng(0)
    n, shape = 2000, (4, 4, 3)
    dim = int(np.prod(shape))
    mix = rng.normal(size=(dim, dim)) / np.sqrt(dim) + np.eye(dim)
    make = lambda count: (rng.normal(size=(count, dim)) @ mix + rng.uniform(0, 5, size=dim)).reshape((count,) + shape)  # noqa: E731
    offset = rng.uniform(0, 5, size=dim).reshape(shape)
    return (make(n) + offset).astype(np.float32), (make(500) + offset).astype(np.float32)


def _cov(z):
    z = np.asarray(z, np.float64).reshape(len(z), -1)
    centred = z - z.mean(axis=0)
    return centred.T @ centred / len(z)


def test_mean_image(images):
    train, test = images
    t = P.fit_mean_image(train)
    assert t.mean.shape == train.shape[1:]
    np.testing.assert_allclose(np.asarray(t(train)).mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(t(test), test - train.astype(np.float64).mean(axis=0), atol=1e-4)


def test_channel_mean_and_std(images):
    train, test = images
    mean = P.fit_channel_mean(train)
    assert mean.mean.shape == (3,)
    np.testing.assert_allclose(np.asarray(mean(train)).mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    standard = P.fit_channel_standardize(train)
    z = np.asarray(standard(train), np.float64)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    flat = train.astype(np.float64).reshape(-1, 3)
    np.testing.assert_allclose(standard(test), (test - flat.mean(0)) / flat.std(0), rtol=1e-4, atol=1e-4)


def test_pca_decorrelates_and_whitens(images):
    train, test = images
    pca = P.fit_pca(train)
    z = np.asarray(pca(train))
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=2e-4)
    cov = _cov(z)
    variances = np.diag(cov)
    np.testing.assert_allclose(cov, np.diag(variances), atol=2e-4 * variances.max())
    assert np.all(np.diff(variances) <= 1e-4 * variances.max()), "components in decreasing order of variance"
    np.testing.assert_allclose(variances, pca.variances, rtol=1e-3)

    white = P.fit_pca(train, whiten=True, epsilon=0.0)
    np.testing.assert_allclose(_cov(white(train)), np.eye(48), atol=1e-3)
    # Applied to test with the train statistics (not the test ones).
    expected = (test.reshape(len(test), -1) - train.reshape(len(train), -1).mean(0)) @ np.asarray(white.components) * np.asarray(white.scale)
    np.testing.assert_allclose(white(test), expected, rtol=1e-4, atol=1e-4)


def test_pca_matches_sklearn_up_to_sign(images):
    train, test = images
    ours = P.fit_pca(train, n_components=5)
    reference = SklearnPCA(n_components=5, svd_solver="full").fit(train.reshape(len(train), -1).astype(np.float64))
    components = np.asarray(ours.components).T  # (k, D)
    signs = np.sign(np.sum(components * reference.components_, axis=1))
    np.testing.assert_allclose(components * signs[:, None], reference.components_, atol=2e-4)
    z = np.asarray(ours(test)) * signs
    np.testing.assert_allclose(z, reference.transform(test.reshape(len(test), -1)), rtol=1e-3, atol=1e-3)
    # sklearn divides by N − 1, we by N.
    n = len(train)
    np.testing.assert_allclose(ours.variances, reference.explained_variance_ * (n - 1) / n, rtol=1e-3)


def test_zca_whitens_and_keeps_the_shape(images):
    train, test = images
    zca = P.fit_zca(train, epsilon=0.0)
    z = np.asarray(zca(train))
    assert z.shape == train.shape
    np.testing.assert_allclose(z.reshape(len(z), -1).mean(axis=0), 0.0, atol=2e-4)
    np.testing.assert_allclose(_cov(z), np.eye(48), atol=1e-3)
    np.testing.assert_allclose(zca.matrix, np.asarray(zca.matrix).T, atol=1e-5)
    # ZCA is the whitening closest to the input: its output correlates positively with each input pixel.
    centred = train.reshape(len(train), -1) - train.reshape(len(train), -1).mean(0)
    assert np.all(np.sum(centred * z.reshape(len(z), -1), axis=0) > 0)
    assert zca(test).shape == test.shape
    # A regularising ε shrinks the small directions: variance λ / (λ + ε) < 1.
    shrunk = P.fit_zca(train, epsilon=1.0)
    assert np.all(np.diag(_cov(shrunk(train))) < 1.0)


def test_transforms_are_pytrees_usable_under_jit(images):
    train, _ = images
    for transform in (P.fit_mean_image(train), P.fit_channel_standardize(train), P.fit_pca(train, 4, whiten=True), P.fit_zca(train)):
        np.testing.assert_allclose(jax.jit(lambda t, x: t(x))(transform, train), transform(train), rtol=1e-5, atol=1e-5)
    assert jnp.asarray(P.fit_pca(train, 4)(train)).shape == (len(train), 4)


def test_model_input_scales_uint8_to_the_unit_interval():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    x = P.model_input(images)
    assert x.dtype == jnp.float32
    np.testing.assert_allclose(x, images / 255.0, rtol=1e-7)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    views = np.full((2, 3, 3, 1), 0.25, np.float32)  # float images are already model input
    np.testing.assert_array_equal(P.model_input(views), views)
    assert P.model_input(images, jnp.bfloat16).dtype == jnp.bfloat16


def test_every_trainer_and_evaluator_sees_the_same_model_input():
    """The supervised step's predictions, SimCLR/MoCo views, encoder embeddings and the raw-pixel
    baseline all start from `model_input`, so an encoder pretrained by one experiment sees the
    range it was trained on when another one fine-tunes or evaluates it."""
    class Inputs(nn.Module):  # returns what it is given, flattened
        @nn.compact
        def __call__(self, x, train=False):
            return x.reshape(x.shape[0], -1) * self.param("one", nn.initializers.ones, ())

    images = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 1), dtype=np.uint8)
    expected = np.asarray(P.model_input(images)).reshape(4, -1)
    variables = Inputs().init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)))
    np.testing.assert_allclose(supervised.predict(variables, images, apply_fn=Inputs().apply), expected)
    model = ContrastiveModel(Inputs(), ProjectionHead(hidden_dim=2, output_dim=2, batch_norm=False))
    np.testing.assert_allclose(embed(model, model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1))), images), expected)
    unchanged = ViewSettings(output_size=(6, 6), area_range=(1.0, 1.0), aspect_range=(1.0, 1.0), flip_probability=0.0,
                             jitter_probability=0.0, grayscale_probability=0.0)
    view1, view2 = simclr_views(jax.random.key(1), images, unchanged)
    np.testing.assert_allclose(np.asarray(view1).reshape(4, -1), expected, atol=1e-6)
    np.testing.assert_allclose(np.asarray(view2).reshape(4, -1), expected, atol=1e-6)
    np.testing.assert_allclose(evaluate.pixel_features(images), expected - expected.mean(1, keepdims=True), atol=1e-6)
