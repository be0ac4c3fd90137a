"""CIE L*a*b* colour and its quantisation into classes: the data of the split-brain autoencoder
(Zhang et al. 2017), which predicts the a*b* channels from L* and L* from a*b* as classification.

The conversion is scikit-image's `rgb2lab` / `lab2rgb` (illuminant D65, 2° observer) in jax.numpy,
for float RGB in [0, 1] with any leading shape `[..., 3]`, jit- and vmap-able:
    sRGB c → linear  c_lin = c / 12.92                      if c ≤ 0.04045,
                             ((c + 0.055) / 1.055)^2.4      otherwise;
    linear → XYZ     [X, Y, Z] = M · [R, G, B]_lin  (M: scikit-image's sRGB matrix);
    XYZ → L*a*b*     L* = 116 f(Y/Yn) − 16,  a* = 500 (f(X/Xn) − f(Y/Yn)),  b* = 200 (f(Y/Yn) − f(Z/Zn)),
                     f(t) = t^(1/3) if t > ε else (κ t + 16) / 116,  ε = 216/24389,  κ = 24389/27,
                     white (Xn, Yn, Zn) = (0.95047, 1, 1.08883).
scikit-image rounds ε and κ/116 to 0.008856 and 7.787; the exact values used here move L*a*b* by
less than 2e-4 (500 · 3.7e-5 · ε, on dark colours). sRGB colours have L* in [0, 100], a* in about
[-86, 98] and b* in about [-108, 95].

Quantisation (class targets): L* into `bins` equal bins of [0, 100]; (a*, b*) into a square grid of
cells of side `grid_size` over [-ab_range, ab_range)², row = a* cell, column = b* cell,
index = row · cells_per_axis + column. Values outside the ranges clip to the edge bins, so every
value maps to the bin whose centre is nearest.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from visionax.errors import UserError

__all__ = ["rgb_to_lab", "lab_to_rgb", "quantize_lightness", "lightness_bin_centers", "quantize_ab",
           "ab_bin_centers"]

EPSILON = 216 / 24389  # ε: where f switches from the cube root to the line, (6/29)³
KAPPA = 24389 / 27  # κ: slope of L* = κ·Y/Yn below ε, (29/3)³
WHITE_D65 = np.array([0.95047, 1.0, 1.08883])  # XYZ of the D65 white point, 2° observer (scikit-image)
XYZ_FROM_RGB = np.array([[0.412453, 0.357580, 0.180423],  # linear sRGB → XYZ (scikit-image)
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]])
RGB_FROM_XYZ = np.linalg.inv(XYZ_FROM_RGB)


def _float_colors(values, name: str, function: str, channels: int, meaning: str) -> jax.Array:
    """`values` as a float array (at least float32) whose last axis has `channels` entries, or a
    UserError naming the shape or dtype and the fix."""
    shape, dtype = np.shape(values), jnp.result_type(values)
    if not shape or shape[-1] != channels:
        raise UserError(f"{function} expects {name} of shape [..., {channels}] ({meaning} in the last "
                        f"axis), got shape {tuple(shape)}; move the channels to the last axis")
    if not jnp.issubdtype(dtype, jnp.floating):
        raise UserError(f"{function} expects float {name}, got dtype {dtype}; convert integer "
                        f"images with images.astype('float32') / 255 first")
    return jnp.asarray(values, jnp.promote_types(dtype, jnp.float32))


def _matrix_apply(matrix: np.ndarray, vectors: jax.Array) -> jax.Array:
    """matrix · v for every v on the last axis of `vectors` `[..., 3]`, at full float32 precision."""
    return jnp.matmul(vectors, jnp.asarray(matrix.T, vectors.dtype), precision=jax.lax.Precision.HIGHEST)


def _srgb_to_linear(channel: jax.Array) -> jax.Array:
    """The sRGB gamma curve undone: c / 12.92 if c ≤ 0.04045 else ((c + 0.055) / 1.055)^2.4."""
    curved = ((jnp.maximum(channel, 0.04045) + 0.055) / 1.055) ** 2.4  # max: no NaN in the other branch
    return jnp.where(channel > 0.04045, curved, channel / 12.92)


def _linear_to_srgb(channel: jax.Array) -> jax.Array:
    """The sRGB gamma curve: 12.92 c if c ≤ 0.0031308 else 1.055 c^(1/2.4) − 0.055."""
    curved = 1.055 * jnp.maximum(channel, 0.0031308) ** (1 / 2.4) - 0.055
    return jnp.where(channel > 0.0031308, curved, 12.92 * channel)


def _lab_f(ratio: jax.Array) -> jax.Array:
    """f(t) = t^(1/3) if t > ε else (κ t + 16) / 116, the CIE lightness curve on t = X/Xn, Y/Yn, Z/Zn."""
    return jnp.where(ratio > EPSILON, jnp.cbrt(jnp.maximum(ratio, EPSILON)), (KAPPA * ratio + 16) / 116)


def _lab_f_inverse(value: jax.Array) -> jax.Array:
    """f⁻¹(u) = u³ if u > 6/29 (= ε^(1/3)) else (116 u − 16) / κ."""
    return jnp.where(value > 6 / 29, value ** 3, (116 * value - 16) / KAPPA)


def rgb_to_lab(images) -> jax.Array:
    """CIE L*a*b* `[..., 3]` of float sRGB `images` `[..., 3]` in [0, 1] (D65, 2° observer):
    L* = 116 f(Y/Yn) − 16, a* = 500 (f(X/Xn) − f(Y/Yn)), b* = 200 (f(Y/Yn) − f(Z/Zn)), with
    [X, Y, Z] = M · linear(RGB), as scikit-image's `rgb2lab` (see the module docstring).

    Integer (uint8) images are refused: divide them by 255 first. Returns float32 (or float64 for
    float64 input with x64 enabled).
    """
    images = _float_colors(images, "images", "rgb_to_lab", 3, "R, G, B")
    xyz = _matrix_apply(XYZ_FROM_RGB, _srgb_to_linear(images))
    f_x, f_y, f_z = jnp.moveaxis(_lab_f(xyz / jnp.asarray(WHITE_D65, xyz.dtype)), -1, 0)
    return jnp.stack([116 * f_y - 16, 500 * (f_x - f_y), 200 * (f_y - f_z)], axis=-1)


def lab_to_rgb(lab) -> jax.Array:
    """Float sRGB `[..., 3]` in [0, 1] of CIE L*a*b* `lab` `[..., 3]`, the inverse of `rgb_to_lab`:
    f_y = (L* + 16) / 116, f_x = f_y + a*/500, f_z = max(f_y − b*/200, 0),
    XYZ = white · f⁻¹(f), RGB = gamma(M⁻¹ · XYZ) clipped to [0, 1], as scikit-image's `lab2rgb`
    (which also clips f_z, i.e. negative Z, to 0; out-of-gamut colours come back clipped).
    """
    lab = _float_colors(lab, "lab", "lab_to_rgb", 3, "L*, a*, b*")
    lightness, a, b = jnp.moveaxis(lab, -1, 0)
    f_y = (lightness + 16) / 116
    f = jnp.stack([f_y + a / 500, f_y, jnp.maximum(f_y - b / 200, 0.0)], axis=-1)
    xyz = _lab_f_inverse(f) * jnp.asarray(WHITE_D65, lab.dtype)
    return jnp.clip(_linear_to_srgb(_matrix_apply(RGB_FROM_XYZ, xyz)), 0.0, 1.0)


def _require_positive_count(value: int, name: str, function: str) -> None:
    if int(value) != value or value < 1:
        raise UserError(f"{function}: {name}={value} must be a positive integer")


def quantize_lightness(lightness, bins: int) -> jax.Array:
    """int32 class of each L* in `lightness` (any shape): k = clip(⌊L* · bins / 100⌋, 0, bins − 1),
    the index of the nearest of `lightness_bin_centers(bins)` (bin k covers [100k/bins, 100(k+1)/bins))."""
    _require_positive_count(bins, "bins", "quantize_lightness")
    lightness = jnp.asarray(lightness, jnp.float32)
    return jnp.clip(jnp.floor(lightness * (bins / 100)), 0, bins - 1).astype(jnp.int32)


def lightness_bin_centers(bins: int) -> jax.Array:
    """float32 `[bins]`: the centre of each L* bin, (k + ½) · 100 / bins."""
    _require_positive_count(bins, "bins", "lightness_bin_centers")
    return (jnp.arange(bins, dtype=jnp.float32) + 0.5) * (100 / bins)


def _cells_per_axis(grid_size: float, ab_range: float, function: str) -> int:
    """cells = 2 · ab_range / grid_size, which must be a whole number."""
    if grid_size <= 0 or ab_range <= 0:
        raise UserError(f"{function}: grid_size={grid_size} and ab_range={ab_range} must be positive")
    cells = round(2 * ab_range / grid_size)
    if cells < 1 or not math.isclose(cells * grid_size, 2 * ab_range):
        raise UserError(f"{function}: 2 * ab_range = {2 * ab_range} is not a whole number of cells of "
                        f"grid_size={grid_size}; choose a grid_size that divides it (e.g. 10 for 110)")
    return cells


def quantize_ab(ab, grid_size: float = 10, ab_range: float = 110) -> jax.Array:
    """int32 class `[...]` of each (a*, b*) in `ab` `[..., 2]` on the square grid over
    [-ab_range, ab_range)²: row = clip(⌊(a* + ab_range) / grid_size⌋, 0, cells − 1), column likewise
    from b*, index = row · cells + column, cells = 2 · ab_range / grid_size (22 by default, 484 classes);
    the index of the nearest of `ab_bin_centers(grid_size, ab_range)`."""
    cells = _cells_per_axis(grid_size, ab_range, "quantize_ab")
    ab = _float_colors(ab, "ab", "quantize_ab", 2, "a*, b*")
    cell = jnp.clip(jnp.floor((ab + ab_range) / grid_size), 0, cells - 1).astype(jnp.int32)
    return cell[..., 0] * cells + cell[..., 1]


def ab_bin_centers(grid_size: float = 10, ab_range: float = 110) -> jax.Array:
    """float32 `[cells², 2]`: the (a*, b*) centre of each grid cell, row i = index // cells and
    column j = index % cells at (−ab_range + (i + ½) · grid_size, −ab_range + (j + ½) · grid_size)."""
    cells = _cells_per_axis(grid_size, ab_range, "ab_bin_centers")
    axis = -ab_range + (jnp.arange(cells, dtype=jnp.float32) + 0.5) * grid_size
    rows, columns = jnp.meshgrid(axis, axis, indexing="ij")
    return jnp.stack([rows.ravel(), columns.ravel()], axis=-1)
