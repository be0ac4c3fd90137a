"""Normalisation layers of lecture 7, written by hand with the variable layout of `flax.linen`.

Every layer computes y = (x − μ) / √(σ² + ε) · γ + β and differs only in the set of elements
μ and σ² are taken over:

- BatchNorm: over the batch (and any spatial axes) per feature; running averages for evaluation.
- LayerNorm: over the features of one example.
- InstanceNorm: over the spatial axes of one example, per channel.
- GroupNorm: over the spatial axes and a group of channels of one example.

Inputs may be (B, L), (B, C, L) or (B, H, W, C): the feature axis is an argument (`axis`,
`feature_axes`, `feature_axis`). Parameters are `scale` (γ) and `bias` (β), running statistics
`batch_stats/{mean,var}`, so variables can be exchanged with the flax layer of the same name.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm"]

Axes = int | Sequence[int]


def _axes(ndim: int, axes: Axes) -> tuple[int, ...]:
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(sorted({axis % ndim for axis in axes}))


def _stats(x: jax.Array, axes: tuple[int, ...], axis_name: str | None = None):
    """Mean μ = E[x] and biased variance σ² = E[(x − μ)²] = E[x²] − E[x]² over `axes`.

    One pass over x, in float32 or wider, as flax computes it: E[x] and E[x²] are reduced together
    (one XLA fusion, and one `pmean` of both when averaged over `axis_name`). The difference keeps
    float32's ~7 digits of E[x²], so σ² has an absolute error of about 1e-7·μ² (exact for |μ| ≲ σ,
    coarse for |μ| ≫ σ, where a two-pass mean((x − μ)²) would stay exact); rounding can then take it
    below 0, so it is clipped at 0."""
    x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    square = jnp.square(x)
    mean, mean_sq = jnp.mean(x, axis=axes), jnp.mean(square, axis=axes)
    if axis_name is not None:
        mean, mean_sq = lax.pmean(jnp.stack([mean, mean_sq]), axis_name)
    return mean, jnp.maximum(0.0, mean_sq - jnp.square(mean))


def _normalize(module: nn.Module, x, mean, var, reduction_axes, feature_axes, epsilon, use_scale, use_bias):
    """(x − μ) / √(σ² + ε) · γ + β with γ, β of the shape of the feature axes, as (x − μ) · m + β
    with m = γ / √(σ² + ε) computed on the statistics' shape (one multiply per element, no divide)."""
    feature_shape = [x.shape[axis] for axis in feature_axes]
    broadcast = [x.shape[axis] if axis in feature_axes else 1 for axis in range(x.ndim)]
    mean, var = jnp.expand_dims(mean, reduction_axes), jnp.expand_dims(var, reduction_axes)
    centred = x - mean
    multiplier = lax.rsqrt(var + epsilon)
    if use_scale:
        multiplier = multiplier * module.param("scale", nn.initializers.ones, feature_shape, jnp.float32).reshape(broadcast)
    y = centred * multiplier
    if use_bias:
        y = y + module.param("bias", nn.initializers.zeros, feature_shape, jnp.float32).reshape(broadcast)
    return y


class BatchNorm(nn.Module):
    """Batch normalisation: y = (x − μ_B) / √(σ²_B + ε) · γ + β with μ_B, σ²_B over the batch per feature.

    Training (`use_running_average=False`) uses the statistics of the batch — over all devices of
    `axis_name` when it is set (synchronised BatchNorm under shard_map/pmap) — and updates the
    running averages m ← momentum · m + (1 − momentum) · μ_B (the same for the biased σ²_B);
    evaluation uses the running averages. `axis` is the feature axis: −1 for (B, L) and
    (B, H, W, C), 1 for (B, C, L).

    `num_splits = G` > 1 is split ("ghost") BatchNorm: in training the batch is cut into G equal
    consecutive slices and each is normalised with its own μ_g, σ²_g, as if it were on a device of
    its own; the running averages move toward the mean over g of the slices' statistics. MoCo uses
    it to emulate shuffle BN on one device. `dtype` is the output's dtype (None: float32 or wider).
    """

    use_running_average: bool | None = None
    axis: Axes = -1
    momentum: float = 0.99
    epsilon: float = 1e-5
    use_bias: bool = True
    use_scale: bool = True
    axis_name: str | None = None
    num_splits: int = 1
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        use_running_average = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        feature_axes = _axes(x.ndim, self.axis)
        feature_shape = [x.shape[axis] for axis in feature_axes]
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(feature_shape, jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones(feature_shape, jnp.float32))
        # Split: x `[B, ...]` seen as `[splits, B/splits, ...]`, statistics per slice (a leading
        # axis, `lead` = 1, that is not reduced); otherwise x itself, with no reshape in the program.
        splits = 1 if use_running_average or self.is_initializing() else self.num_splits
        if splits > 1:
            self._check_splits(x, feature_axes)
        lead = int(splits > 1)
        slices = x.reshape(splits, x.shape[0] // splits, *x.shape[1:]) if lead else x
        slice_features = tuple(axis + lead for axis in feature_axes)
        reduction_axes = tuple(axis for axis in range(lead, slices.ndim) if axis not in slice_features)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            axis_name = None if self.is_initializing() else self.axis_name
            mean, var = _stats(slices, reduction_axes, axis_name)  # [splits, *features] or [*features]
            if not self.is_initializing():
                batch_mean, batch_var = (jnp.mean(mean, axis=0), jnp.mean(var, axis=0)) if lead else (mean, var)
                ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * batch_mean
                ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * batch_var
        y = _normalize(self, slices, mean, var, reduction_axes, slice_features, self.epsilon,
                       self.use_scale, self.use_bias).reshape(x.shape)
        return y if self.dtype is None else y.astype(self.dtype)

    def _check_splits(self, x: jax.Array, feature_axes: tuple[int, ...]) -> None:
        if 0 in feature_axes:
            raise ValueError("split BatchNorm needs the batch on axis 0, not a feature axis")
        if x.shape[0] % self.num_splits:
            raise ValueError(f"split BatchNorm: batch {x.shape[0]} is not divisible by num_splits={self.num_splits}")
        if self.axis_name is not None:
            raise ValueError("split BatchNorm takes statistics per slice; it cannot also synchronise over axis_name")


class LayerNorm(nn.Module):
    """Layer normalisation: y = (x − μ) / √(σ² + ε) · γ + β with μ, σ² over `reduction_axes` of each example.

    γ and β have the shape of `feature_axes`. For (B, L): the defaults (−1, −1); for (B, C, L) or
    (B, H, W, C) normalising a whole example: reduction_axes=(1, 2) or (1, 2, 3).
    """

    epsilon: float = 1e-6
    reduction_axes: Axes = -1
    feature_axes: Axes = -1
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        reduction_axes = _axes(x.ndim, self.reduction_axes)
        mean, var = _stats(x, reduction_axes)
        return _normalize(self, x, mean, var, reduction_axes, _axes(x.ndim, self.feature_axes),
                          self.epsilon, self.use_scale, self.use_bias)


class InstanceNorm(nn.Module):
    """Instance normalisation: y = (x − μ) / √(σ² + ε) · γ + β, μ, σ² per example and channel over the other axes.

    `feature_axes` are the channel axes (−1 for (B, H, W, C), 1 for (B, C, L)); statistics are
    taken over every axis but the batch axis 0 and the channel axes.
    """

    epsilon: float = 1e-6
    feature_axes: Axes = -1
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        feature_axes = _axes(x.ndim, self.feature_axes)
        if 0 in feature_axes:
            raise ValueError("InstanceNorm: axis 0 is the batch axis and cannot be a channel axis")
        reduction_axes = tuple(axis for axis in range(1, x.ndim) if axis not in feature_axes)
        mean, var = _stats(x, reduction_axes)
        return _normalize(self, x, mean, var, reduction_axes, feature_axes, self.epsilon, self.use_scale, self.use_bias)


class GroupNorm(nn.Module):
    """Group normalisation: y = (x − μ_g) / √(σ²_g + ε) · γ + β, μ_g, σ²_g per example over the spatial axes and a group of channels.

    The C channels (axis `feature_axis`) are split into `num_groups` groups of consecutive
    channels (or groups of `group_size`); γ, β are per channel. num_groups = 1 is LayerNorm over
    the example, group_size = 1 is InstanceNorm.
    """

    num_groups: int | None = 32
    group_size: int | None = None
    feature_axis: int = -1
    epsilon: float = 1e-6
    use_bias: bool = True
    use_scale: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if (self.num_groups is None) == (self.group_size is None):
            raise ValueError("GroupNorm: give exactly one of num_groups and group_size")
        feature_axis = self.feature_axis % x.ndim
        if feature_axis == 0:
            raise ValueError("GroupNorm: axis 0 is the batch axis and cannot be the channel axis")
        channels = x.shape[feature_axis]
        groups = self.num_groups if self.group_size is None else channels // self.group_size
        if groups <= 0 or channels % groups:
            raise ValueError(f"GroupNorm: {channels} channels cannot be split into {groups} equal groups")
        # Channels last, then split them: (B, ..., G, C/G); statistics over everything but B and G.
        moved = jnp.moveaxis(x, feature_axis, -1)
        grouped = moved.reshape(moved.shape[:-1] + (groups, channels // groups))
        axes = tuple(range(1, grouped.ndim - 2)) + (grouped.ndim - 1,)
        mean, var = _stats(grouped, axes)  # (B, G)
        normed = (grouped - jnp.expand_dims(mean, axes)) / jnp.sqrt(jnp.expand_dims(var, axes) + self.epsilon)
        normed = jnp.moveaxis(normed.reshape(moved.shape), -1, feature_axis)
        broadcast = [channels if axis == feature_axis else 1 for axis in range(x.ndim)]
        if self.use_scale:
            normed = normed * self.param("scale", nn.initializers.ones, (channels,), jnp.float32).reshape(broadcast)
        if self.use_bias:
            normed = normed + self.param("bias", nn.initializers.zeros, (channels,), jnp.float32).reshape(broadcast)
        return normed
