"""Colourising video to learn tracking (Vondrick et al. 2018): a CNN embeds grey frames, the colours
of a later frame are copied from a reference frame by attention between the embeddings, and the only
way to copy them right is to point at the same object, so tracking emerges without labels.

Frames are converted to CIE L*a*b* (`visionax.data.color`). The encoder sees the lightness L*/100
only and embeds every frame to a feature map f `[h, w, d]` (h = H / stride). For a reference frame
(positions i) and a target frame (positions j):
    attention    A_ij = exp(f_iᵀ g_j / τ) / Σ_k exp(f_kᵀ g_j / τ)   (softmax over the reference positions),
    prediction   y_j = Σ_i A_ij c_i,  c_i the one-hot quantised colour of reference position i,
    loss         L = −(1/|J|) Σ_{j ∈ J} log y_j[q_j]                (cross-entropy with the target's colour q_j),
with g = f for the learned features, τ = 1 in the paper. Colours are the a*b* channels averaged over
each stride×stride block (the resolution of f) and quantised on `quantize_ab`'s uniform grid (no
k-means: a video holds a few colours far apart in hue, which a grid of `grid_size` units separates).
Since c is one-hot, y_j[q_j] = Σ_{i: q_i = q_j} A_ij: the loss is computed from that sum (a
log-sum-exp over the reference positions of the target's colour) without the `[m, classes]`
prediction; J holds the target positions whose colour occurs in the reference (the others could not
be predicted by any attention). In the step each frame t = 1…T−1 is a target and the frame before it
its reference (the paper's reference frames also precede their target).

Tracking, recursively t − 1 → t (the pairs the step trains on): frame 0's one-hot object labels pooled
to the feature grid are carried to frame 1 by the attention between frames 0 and 1, those predicted label
distributions (kept soft) to frame 2, and so on; each frame's distributions are upsampled bilinearly
to H×W and every pixel takes its most likely label. Baselines: the identity (frame 0's mask copied)
and the nearest grey pixel, the same propagation on the pooled lightness with reference features
(l, −l²/2) and target features (l, 1), for which f_iᵀ g_j = −(l_i − l_j)²/2 + l_j²/2, so
A_ij = softmax_i(−(l_i − l_j)² / 2τ): each pixel copies the labels of the pixels nearest in grey level.
The encoder is a small fully convolutional CNN of this module (the configs' `get_model` backbones pool
their maps to one vector), zero-padded: near the borders its features know roughly where they are,
which helps between consecutive frames (circular padding, position-blind, tracked worse here).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax.data.color import quantize_ab, rgb_to_lab
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.layers.conv import conv_module
from visionax.parallel import DATA_AXIS
from visionax.train.state import TrainState

__all__ = [
    "ColorizationSettings",
    "FrameEncoder",
    "attention",
    "colorization_loss",
    "frame_encoder",
    "frame_features",
    "grey_pixel_features",
    "lightness_and_colors",
    "mean_iou",
    "object_ious",
    "pool_labels",
    "predict_colors",
    "propagate_masks",
    "train_step",
]


@dataclasses.dataclass(frozen=True)
class ColorizationSettings:
    """The encoder (`widths` of its 3×3 convolutions, the first with stride `stride`, the others
    dilated by `dilations`; a 1×1 convolution to `feature_dim`), the attention's temperature τ and
    the colour grid (`quantize_ab(grid_size, ab_range)`). Validated here, once."""

    widths: tuple[int, ...] = (32, 32, 32, 32)
    dilations: tuple[int, ...] = (1, 1, 2, 4)
    stride: int = 2
    feature_dim: int = 64
    temperature: float = 1.0
    grid_size: float = 10.0
    ab_range: float = 110.0

    def __post_init__(self):
        if not self.widths or len(self.widths) != len(self.dilations) or min(self.widths) < 1 \
                or min(self.dilations) < 1:
            raise UserError(f"widths={tuple(self.widths)} and dilations={tuple(self.dilations)} must be equally "
                            "long lists of positive integers; pass e.g. --config.widths='(32, 32)' "
                            "--config.dilations='(1, 2)'")
        if self.stride not in (1, 2) or self.feature_dim < 1:
            raise UserError(f"stride={self.stride} must be 1 or 2 and feature_dim={self.feature_dim} >= 1; pass "
                            "e.g. --config.stride=2 --config.feature_dim=64")
        if not self.temperature > 0:
            raise UserError(f"temperature={self.temperature} must be positive; pass e.g. --config.temperature=1.0")
        if self.grid_size <= 0 or self.ab_range <= 0 or not float(2 * self.ab_range / self.grid_size).is_integer():
            raise UserError(f"grid_size={self.grid_size} must divide 2 * ab_range = {2 * self.ab_range} (both "
                            "positive); pass e.g. --config.grid_size=10 --config.ab_range=110")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "ColorizationSettings":
        return cls(widths=tuple(config.widths), dilations=tuple(config.dilations), stride=config.stride,
                   feature_dim=config.feature_dim, temperature=config.temperature, grid_size=config.grid_size,
                   ab_range=config.ab_range)

    def check_frame_size(self, height: int, width: int) -> None:
        """A UserError unless the stride divides the frames' sides (colours and masks pool by blocks)."""
        if height % self.stride or width % self.stride:
            raise UserError(f"frames of {height}×{width} do not split into {self.stride}×{self.stride} blocks; "
                            f"use even --config.data.height and --config.data.width, or --config.stride=1")


class FrameEncoder(nn.Module):
    """Grey frames `[n, H, W, 1]` → feature maps `[n, H / stride, W / stride, feature_dim]`: 3×3
    convolutions with ReLU (the first with stride `stride`, layer k dilated by `dilations[k]`), then a
    linear 1×1 convolution. No normalisation: the state is parameters only."""

    widths: Sequence[int] = (32, 32, 32, 32)
    dilations: Sequence[int] = (1, 1, 2, 4)
    stride: int = 2
    feature_dim: int = 64
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, frames: jax.Array, train: bool = False) -> jax.Array:
        conv = conv_module(self.conv_impl)
        x = frames.astype(self.dtype)
        for index, (width, dilation) in enumerate(zip(self.widths, self.dilations)):
            stride = self.stride if index == 0 else 1
            x = nn.relu(conv(width, (3, 3), strides=stride, kernel_dilation=dilation, dtype=self.dtype)(x))
        features = conv(self.feature_dim, (1, 1), dtype=self.dtype)(x)
        return features.astype(jnp.promote_types(self.dtype, jnp.float32))  # float32 attention from bfloat16


def frame_encoder(settings: ColorizationSettings, *, conv_impl: str = "xla", dtype=jnp.float32) -> FrameEncoder:
    return FrameEncoder(widths=settings.widths, dilations=settings.dilations, stride=settings.stride,
                        feature_dim=settings.feature_dim, conv_impl=conv_impl, dtype=dtype)


def _pool(values: jax.Array, stride: int) -> jax.Array:
    """The mean of every stride×stride block of `values` `[..., H, W, c]` → `[..., H/stride, W/stride, c]`."""
    *leading, height, width, channels = values.shape
    blocks = values.reshape(*leading, height // stride, stride, width // stride, stride, channels)
    return blocks.mean(axis=(-4, -2))


def lightness_and_colors(frames: jax.Array, settings: ColorizationSettings) -> tuple[jax.Array, jax.Array]:
    """uint8 RGB `frames` `[..., H, W, 3]` → (the encoder's input L*/100 `[..., H, W, 1]`, the int32
    colour class `[..., H/stride, W/stride]`: `quantize_ab` of a*b* averaged over each stride×stride block)."""
    lab = rgb_to_lab(model_input(frames))
    ab = _pool(lab[..., 1:], settings.stride)
    return lab[..., :1] / 100, quantize_ab(ab, settings.grid_size, settings.ab_range)


def _pooled_lightness(frames: jax.Array, stride: int) -> jax.Array:
    """L*/100 of uint8 RGB `frames` `[..., H, W, 3]` averaged over stride×stride blocks `[..., h·w, 1]`."""
    lightness = _pool(rgb_to_lab(model_input(frames))[..., :1] / 100, stride)
    return lightness.reshape(*lightness.shape[:-3], -1, 1)


def attention(reference_features: jax.Array, target_features: jax.Array, temperature: float = 1.0) -> jax.Array:
    """A_ij = exp(f_iᵀ g_j / τ) / Σ_k exp(f_kᵀ g_j / τ), `[..., n, m]`, from the reference features f
    `[..., n, d]` (positions i) and target features g `[..., m, d]` (positions j): each column j is a
    distribution over the reference positions."""
    return jax.nn.softmax(_logits(reference_features, target_features, temperature), axis=-2)


def _logits(reference_features: jax.Array, target_features: jax.Array, temperature: float) -> jax.Array:
    """f_iᵀ g_j / τ, `[..., n, m]`."""
    return jnp.einsum("...id,...jd->...ij", reference_features, target_features,
                      precision=jax.lax.Precision.HIGHEST) / temperature


def predict_colors(weights: jax.Array, reference_colors: jax.Array) -> jax.Array:
    """y_j = Σ_i A_ij c_i, `[..., m, classes]`, from the attention `weights` `[..., n, m]` and the
    reference's colours (or labels) as distributions `reference_colors` `[..., n, classes]`."""
    return jnp.einsum("...ij,...ic->...jc", weights, reference_colors, precision=jax.lax.Precision.HIGHEST)


def colorization_loss(reference_features: jax.Array, target_features: jax.Array, reference_colors: jax.Array,
                      target_colors: jax.Array, temperature: float = 1.0, axis_name: str | None = None
                      ) -> tuple[jax.Array, jax.Array]:
    """(L, |J|): the cross-entropy L = −(1/|J|) Σ_{j ∈ J} log y_j[q_j] of the colours predicted through
    `attention` (features `[..., n, d]` and `[..., m, d]`) from the reference's classes
    `reference_colors` (int `[..., n]`) at the target's classes q = `target_colors` (int `[..., m]`),
    log y_j[q_j] = logsumexp_{i: c_i = q_j} (f_iᵀ g_j / τ) − logsumexp_i (f_iᵀ g_j / τ); J: the target
    positions (of every leading index) whose class occurs in their reference. With `axis_name`, J and
    the sum run over every device's positions and every device returns the global L and |J| (the
    contrastive losses' gradient convention: `lax.pmean` the parameter gradients)."""
    logits = _logits(reference_features, target_features, temperature)
    same = reference_colors[..., :, None] == target_colors[..., None, :]  # [..., n, m]
    valid = jnp.any(same, axis=-2)
    matched = jax.nn.logsumexp(jnp.where(same, logits, -jnp.inf), axis=-2)  # −∞ where unmatched: left out below
    log_likelihood = jnp.where(valid, matched - jax.nn.logsumexp(logits, axis=-2), 0.0)
    count = jnp.sum(valid).astype(log_likelihood.dtype)
    if axis_name is None:
        return -jnp.sum(log_likelihood) / count, count
    count = jax.lax.psum(count, axis_name)
    return jax.lax.psum(-jnp.sum(log_likelihood) / count, axis_name), count


def _frame_features(apply_fn, variables: dict, lightness: jax.Array) -> jax.Array:
    """Features `[..., T, h·w, d]` of the frames' lightness `[..., T, H, W, 1]`."""
    *leading, height, width, _ = lightness.shape
    maps = apply_fn(variables, lightness.reshape(-1, height, width, 1))
    return maps.reshape(*leading, maps.shape[-3] * maps.shape[-2], maps.shape[-1])


def train_step(state: TrainState, batch: dict, *, settings: ColorizationSettings) -> tuple[TrainState, dict]:
    """One colourisation step on this device's videos `batch["image"]` (uint8 `[local_batch, T, H, W,
    3]`; labels unused): frame t − 1 is the reference of frame t for t = 1…T−1, the loss is
    `colorization_loss` over every target position of the global batch; gradients pmean'd over
    `DATA_AXIS`. Metrics: the loss and the share of target positions whose colour occurs in their
    reference (|J| over all)."""
    lightness, colors = lightness_and_colors(batch["image"], settings)
    colors = colors.reshape(*colors.shape[:2], -1)  # [b, T, h·w]
    reference_colors, target_colors = colors[:, :-1], colors[:, 1:]  # [b, T − 1, n], [b, T − 1, m]

    def loss_fn(params):
        features = _frame_features(state.apply_fn, {"params": params}, lightness)  # [b, T, h·w, d]
        return colorization_loss(features[:, :-1], features[:, 1:], reference_colors, target_colors,
                                 settings.temperature, axis_name=DATA_AXIS)

    (loss, count), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    positions = jax.lax.psum(jnp.asarray(target_colors.size, count.dtype), DATA_AXIS)
    metrics = {"loss": loss, "positions_used": count / positions}
    return state.apply_gradients(jax.lax.pmean(grads, DATA_AXIS)), metrics


def frame_features(apply_fn, variables: dict, frames: jax.Array, settings: ColorizationSettings) -> jax.Array:
    """The encoder's features `[..., T, h·w, d]` of uint8 RGB frames `[..., T, H, W, 3]` (seen in grey)."""
    return _frame_features(apply_fn, variables, lightness_and_colors(frames, settings)[0])


def pool_labels(masks: jax.Array, num_labels: int, stride: int) -> jax.Array:
    """The share of each label in every stride×stride block of integer `masks` `[..., H, W]`:
    `[..., (H/stride)·(W/stride), num_labels]` (one-hot labels averaged)."""
    pooled = _pool(jax.nn.one_hot(masks, num_labels), stride)
    return pooled.reshape(*pooled.shape[:-3], -1, num_labels)


def grey_pixel_features(frames: jax.Array, stride: int) -> tuple[jax.Array, jax.Array]:
    """The nearest-grey-pixel baseline's (reference features (l, −l²/2), target features (l, 1)),
    each `[..., T, h·w, 2]`, of uint8 RGB `frames` `[..., T, H, W, 3]`: l the lightness L*/100
    averaged over stride×stride blocks; with them `attention` is softmax_i(−(l_i − l_j)² / 2τ)."""
    lightness = _pooled_lightness(frames, stride)
    return (jnp.concatenate([lightness, -lightness ** 2 / 2], axis=-1),
            jnp.concatenate([lightness, jnp.ones_like(lightness)], axis=-1))


def propagate_masks(reference_features: jax.Array, target_features: jax.Array, first_mask: jax.Array, *,
                    num_labels: int, temperature: float, stride: int) -> jax.Array:
    """Frame 0's integer mask `first_mask` `[H, W]` carried through frames 1…T' recursively: labels p₀ =
    `pool_labels(first_mask)`, p_t = `predict_colors(attention(f_{t−1}, g_t, τ), p_{t−1})` (soft), each
    p_t upsampled bilinearly to H×W and its most likely label taken per pixel. `reference_features`
    `[T', n, d]` are frames 0…T'−1 as references, `target_features` `[T', m, d]` frames 1…T' as
    targets, on the (H/stride)×(W/stride) grid (n = m); returns int32 `[T', H, W]` for frames 1…T'."""
    height, width = first_mask.shape

    def carry(labels, features):
        labels = predict_colors(attention(features[0], features[1], temperature), labels)
        return labels, labels

    _, predicted = jax.lax.scan(carry, pool_labels(first_mask, num_labels, stride),
                                (reference_features, target_features))  # [T', m, labels]
    grid = predicted.reshape(-1, height // stride, width // stride, num_labels)
    upsampled = jax.image.resize(grid, (grid.shape[0], height, width, num_labels), "bilinear")
    return jnp.argmax(upsampled, axis=-1).astype(jnp.int32)


def object_ious(predicted: np.ndarray, masks: np.ndarray, num_objects: int) -> np.ndarray:
    """float64 `[..., num_objects]`: for object k = 1…num_objects of every mask pair (`predicted`,
    `masks` integer `[..., H, W]`), IoU_k = |P = k ∧ M = k| / |P = k ∨ M = k|; NaN where neither has k."""
    predicted, masks = np.asarray(predicted), np.asarray(masks)
    ids = np.arange(1, num_objects + 1)
    inside_p = predicted[..., None] == ids  # [..., H, W, K]
    inside_m = masks[..., None] == ids
    intersection = np.sum(inside_p & inside_m, axis=(-3, -2))
    union = np.sum(inside_p | inside_m, axis=(-3, -2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, intersection / np.maximum(union, 1), np.nan)


def mean_iou(predicted: np.ndarray, masks: np.ndarray, num_objects: int) -> float:
    """The mean of `object_ious` over every (frame, object) pair where the object is present in
    either mask (0 = background is not an object)."""
    return float(np.nanmean(object_ious(predicted, masks, num_objects)))
