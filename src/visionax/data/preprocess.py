"""Data preprocessing of lecture 7, and the one image convention every model input goes through.

`model_input` turns stored uint8 images into what every model of visionax sees: float32 in [0, 1].
Every trainer, evaluator, augmentation and the raw-pixel baseline calls it, so an encoder trained
by one experiment sees the same range when another fine-tunes or evaluates it.

Each `fit_*` takes training images (N, ...) — channels last, e.g. (N, H, W, C) or (N, D) — and
returns a small immutable transform whose `apply(x)` (or call) preprocesses any batch with the
training statistics: fit on train, apply to train, validation and test alike.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "model_input", "MeanImage", "ChannelMean", "ChannelStandardize", "PCA", "ZCA",
    "fit_mean_image", "fit_channel_mean", "fit_channel_standardize", "fit_pca", "fit_zca",
]


def model_input(images: jax.Array, dtype=jnp.float32) -> jax.Array:
    """uint8 images `[..., height, width, channels]` (0..255) as `dtype` in [0, 1]: x / 255.

    Float images are taken to be in [0, 1] already and only cast (augmented views are).
    """
    images = jnp.asarray(images)
    if images.dtype == jnp.uint8:
        images = images.astype(jnp.float32) / 255.0
    return images.astype(dtype)


class MeanImage(NamedTuple):
    """Subtract the mean image: x − μ with μ = (1/N) Σ_n x_n of the shape of one image (AlexNet)."""

    mean: jax.Array

    def apply(self, x: jax.Array) -> jax.Array:
        return jnp.asarray(x, jnp.float32) - self.mean

    __call__ = apply


class ChannelMean(NamedTuple):
    """Subtract the per-channel mean: x − μ_c with μ_c the mean of channel c over all images and pixels (VGG)."""

    mean: jax.Array

    def apply(self, x: jax.Array) -> jax.Array:
        return jnp.asarray(x, jnp.float32) - self.mean

    __call__ = apply


class ChannelStandardize(NamedTuple):
    """Per-channel mean and std: (x − μ_c) / σ_c with μ_c, σ_c over all images and pixels of channel c (ResNet)."""

    mean: jax.Array
    std: jax.Array

    def apply(self, x: jax.Array) -> jax.Array:
        return (jnp.asarray(x, jnp.float32) - self.mean) / self.std

    __call__ = apply


class PCA(NamedTuple):
    """PCA: z = (x − μ) U_k, the centred data in the basis of the top-k eigenvectors of its covariance Σ = U diag(λ) Uᵀ.

    With `whiten`, z = (x − μ) U_k diag(1/√(λ_k + ε)): decorrelated and of unit variance. The
    result is (N, k) with components in decreasing order of variance.
    """

    mean: jax.Array  # (D,)
    components: jax.Array  # (D, k), columns are eigenvectors
    variances: jax.Array  # (k,) eigenvalues λ, decreasing
    scale: jax.Array  # (k,) 1/√(λ + ε) when whitening, ones otherwise

    def apply(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        return (x.reshape(x.shape[0], -1) - self.mean) @ self.components * self.scale

    __call__ = apply


class ZCA(NamedTuple):
    """ZCA whitening: x̃ = (x − μ) W with W = U diag(1/√(λ + ε)) Uᵀ; unit covariance, closest to the input, same shape."""

    mean: jax.Array  # (D,)
    matrix: jax.Array  # (D, D), symmetric

    def apply(self, x: jax.Array) -> jax.Array:
        x = jnp.asarray(x, jnp.float32)
        return ((x.reshape(x.shape[0], -1) - self.mean) @ self.matrix).reshape(x.shape)

    __call__ = apply


def fit_mean_image(x: jax.Array) -> MeanImage:
    """The mean image of the training set, μ = (1/N) Σ_n x_n."""
    return MeanImage(jnp.mean(jnp.asarray(x, jnp.float32), axis=0))


def fit_channel_mean(x: jax.Array) -> ChannelMean:
    """The per-channel mean of the training set (channels last)."""
    x = jnp.asarray(x, jnp.float32)
    return ChannelMean(jnp.mean(x, axis=tuple(range(x.ndim - 1))))


def fit_channel_standardize(x: jax.Array, epsilon: float = 1e-8) -> ChannelStandardize:
    """The per-channel mean and standard deviation of the training set (channels last); σ_c floored at ε."""
    x = jnp.asarray(x, jnp.float32)
    axes = tuple(range(x.ndim - 1))
    return ChannelStandardize(jnp.mean(x, axis=axes), jnp.maximum(jnp.std(x, axis=axes), epsilon))


def _covariance(x: jax.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean μ and eigen-decomposition (λ decreasing, U) of Σ = (1/N) (x − μ)ᵀ(x − μ), in float64 on the host.

    Fitting happens once, so it is done in NumPy float64: the small eigenvalues that whitening
    divides by are then accurate; the transforms hold float32 arrays and run on the device.
    """
    flat = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    mean = flat.mean(axis=0)
    centred = flat - mean
    cov = centred.T @ centred / flat.shape[0]
    eigenvalues, eigenvectors = np.linalg.eigh(cov)  # ascending
    return mean, np.maximum(eigenvalues[::-1], 0.0), eigenvectors[:, ::-1]


def fit_pca(x: jax.Array, n_components: int | None = None, whiten: bool = False, epsilon: float = 1e-5) -> PCA:
    """PCA (and PCA whitening with `whiten=True`) fitted on the training set; keeps the top `n_components`."""
    mean, eigenvalues, eigenvectors = _covariance(x)
    k = eigenvalues.shape[0] if n_components is None else n_components
    variances = eigenvalues[:k]
    scale = 1.0 / np.sqrt(variances + epsilon) if whiten else np.ones_like(variances)
    return PCA(*(jnp.asarray(a, jnp.float32) for a in (mean, eigenvectors[:, :k], variances, scale)))


def fit_zca(x: jax.Array, epsilon: float = 1e-5) -> ZCA:
    """ZCA whitening fitted on the training set: W = U diag(1/√(λ + ε)) Uᵀ."""
    mean, eigenvalues, eigenvectors = _covariance(x)
    matrix = (eigenvectors / np.sqrt(eigenvalues + epsilon)) @ eigenvectors.T
    return ZCA(jnp.asarray(mean, jnp.float32), jnp.asarray(matrix, jnp.float32))
