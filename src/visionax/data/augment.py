"""On-device data augmentation (lecture 7 and SimCLR's view pipeline), one example at a time.

Every `random_*` function takes a PRNG key and ONE float image `[height, width, channels]` with
values in [0, 1], and is jit- and vmap-able: batch it with `jax.vmap` over per-example keys. The
same key gives the same output. Images with 1 channel (digits) and 3 channels (RGB) are both
accepted; on 1 channel, colour jitter applies brightness and contrast only (saturation and hue are
undefined without colour) and grayscale is the identity. dm-pix supplies the image operations
(flip, crop, brightness, contrast, saturation, hue, grayscale, blur, affine warp); this module
samples their parameters. Each random operation is a `sample_*` of its parameters and an `apply_*`
of given parameters (`random_*` = apply ∘ sample), so that the distribution of every draw can be
tested on its own: `sample_view` draws all the parameters of a SimCLR view, `apply_view` makes it.

`simclr_views(key, images, settings)` makes SimCLR's two views of a batch of uint8 images on the
device, with per-example keys `fold_in(key, first_index + i)` so that the views of an example do not
depend on how the batch is split over devices.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import dm_pix
import jax
import jax.numpy as jnp

from visionax.data.preprocess import model_input
from visionax.errors import UserError

__all__ = [
    "horizontal_flip", "random_crop", "sample_crop_box", "crop_and_resize",
    "random_resized_crop", "color_jitter", "JitterParameters", "sample_color_jitter",
    "apply_color_jitter", "random_color_jitter", "apply_grayscale", "random_grayscale",
    "sample_gaussian_blur", "apply_gaussian_blur", "random_gaussian_blur", "affine", "random_affine",
    "ViewSettings", "ViewParameters", "sample_view", "apply_view", "augment_view", "simclr_views",
]


def _scale(uniform: jax.Array, low: float, high: float) -> jax.Array:
    """Uniform [0, 1) draws mapped to [low, high)."""
    return low + (high - low) * uniform


def horizontal_flip(key: jax.Array, image: jax.Array, probability: float = 0.5) -> jax.Array:
    """Mirror left-right, x'[i, j] = x[i, W−1−j], with probability `probability`."""
    return dm_pix.random_flip_left_right(key, image, probability=probability)


def random_crop(key: jax.Array, image: jax.Array, padding: int) -> jax.Array:
    """Zero-pad by `padding` pixels on each side, then crop back to `[height, width]` at a uniformly
    random offset: x'[i, j] = pad(x)[i + dy, j + dx], dy, dx ∈ {0, …, 2·padding}."""
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return dm_pix.random_crop(key, padded, image.shape)


def sample_crop_box(
    key: jax.Array,
    height: int,
    width: int,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> jax.Array:
    """A random box `[top, left, box_height, box_width]` (float pixels) covering a fraction of the
    image area uniform in `area_range`, with width/height log-uniform in `aspect_range`.

    As torchvision's `RandomResizedCrop`: `attempts` candidates are drawn and the first that fits
    inside the image is kept; if none fits, the central crop of the whole image with its aspect
    ratio clamped to `aspect_range` (the whole image when its ratio is inside). The box is not
    rounded to whole pixels (`crop_and_resize` interpolates).
    """
    uniform = jax.random.uniform(key, (2 * attempts + 2,))  # one draw: few PRNG calls compile fast
    area = height * width * _scale(uniform[:attempts], *area_range)
    aspect = jnp.exp(_scale(uniform[attempts:2 * attempts], *map(math.log, aspect_range)))
    box_width, box_height = jnp.sqrt(area * aspect), jnp.sqrt(area / aspect)
    fits = (box_width <= width) & (box_height <= height)
    first = jnp.argmax(fits)
    fallback_height, fallback_width = _central_box(height, width, aspect_range)
    box_height = jnp.where(fits[first], box_height[first], fallback_height)
    box_width = jnp.where(fits[first], box_width[first], fallback_width)
    top = jnp.where(fits[first], uniform[-2] * (height - box_height), (height - box_height) / 2)
    left = jnp.where(fits[first], uniform[-1] * (width - box_width), (width - box_width) / 2)
    return jnp.stack([top, left, box_height, box_width])


def _central_box(height: int, width: int, aspect_range: tuple[float, float]) -> tuple[float, float]:
    """torchvision's fallback size: the whole image with width/height clamped to `aspect_range`."""
    ratio = width / height
    if ratio < aspect_range[0]:
        return float(round(width / aspect_range[0])), float(width)
    if ratio > aspect_range[1]:
        return float(height), float(round(height * aspect_range[1]))
    return float(height), float(width)


def crop_and_resize(image: jax.Array, box: jax.Array, output_size: tuple[int, int]) -> jax.Array:
    """The region `box = [top, left, box_height, box_width]` resampled bilinearly (antialiased when
    shrinking) to `[*output_size, channels]`: output pixel centre o maps to input top + o·box/output."""
    out_height, out_width = output_size
    scale = jnp.stack([out_height / box[2], out_width / box[3]])
    translation = -box[:2] * scale
    return jax.image.scale_and_translate(
        image, (out_height, out_width, image.shape[-1]), (0, 1), scale, translation,
        method="linear", antialias=True)


def random_resized_crop(
    key: jax.Array,
    image: jax.Array,
    output_size: tuple[int, int],
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> jax.Array:
    """Inception-style crop: a `sample_crop_box` box resized to `output_size`."""
    box = sample_crop_box(key, image.shape[0], image.shape[1], area_range, aspect_range)
    return crop_and_resize(image, box, output_size)


def color_jitter(
    image: jax.Array,
    brightness_delta: jax.Array,
    contrast_factor: jax.Array,
    saturation_factor: jax.Array,
    hue_delta: jax.Array,
    order: jax.Array,
) -> jax.Array:
    """Brightness x + δ_b, contrast (x − mean)·c + mean, saturation S·s (HSV), hue H + δ_h (HSV),
    applied in the order given by the permutation `order` of (0, 1, 2, 3), each clipped to [0, 1].

    On a 1-channel image only brightness and contrast apply (in the relative order `order` gives).
    """
    operations = [
        lambda x: dm_pix.adjust_brightness(x, brightness_delta),
        lambda x: dm_pix.adjust_contrast(x, contrast_factor),
    ]
    if image.shape[-1] == 3:
        operations += [
            lambda x: dm_pix.adjust_saturation(x, saturation_factor),
            lambda x: dm_pix.adjust_hue(x, hue_delta),
        ]
    elif image.shape[-1] != 1:
        raise UserError(f"colour jitter needs 1 or 3 channels, not {image.shape[-1]}; "
                        "convert the images to grayscale or RGB")
    branches = [
        (lambda x, operation=operation: jnp.clip(operation(x), 0.0, 1.0)) for operation in operations
    ] + [lambda x: x] * (4 - len(operations))
    return jax.lax.fori_loop(
        0, 4, lambda position, x: jax.lax.switch(order[position], branches, x), image)


class JitterParameters(NamedTuple):
    """One draw of SimCLR's colour distortion: whether it applies, brightness δ_b, contrast and
    saturation factors, hue δ_h, and the order of the four operations (a permutation of 0..3)."""

    applied: jax.Array
    brightness: jax.Array
    contrast: jax.Array
    saturation: jax.Array
    hue: jax.Array
    order: jax.Array


def sample_color_jitter(key: jax.Array, strength: float, probability: float = 0.8) -> JitterParameters:
    """SimCLR's colour distortion at strength s: applied with probability `probability`; brightness
    δ_b ~ U[−0.8s, 0.8s] (additive, SimCLR v1), contrast and saturation factors ~ U[1−0.8s, 1+0.8s]
    (floored at 0), hue δ_h ~ U[−0.2s, 0.2s], the four in a uniformly random order."""
    uniform = jax.random.uniform(key, (9,))
    intensity, hue = 0.8 * strength, 0.2 * strength
    low = max(0.0, 1.0 - intensity)
    return JitterParameters(
        applied=uniform[0] < probability,
        brightness=_scale(uniform[1], -intensity, intensity),
        contrast=_scale(uniform[2], low, 1.0 + intensity),
        saturation=_scale(uniform[3], low, 1.0 + intensity),
        hue=_scale(uniform[4], -hue, hue),
        order=jnp.argsort(uniform[5:]),  # a uniformly random permutation of the four operations
    )


def apply_color_jitter(image: jax.Array, parameters: JitterParameters) -> jax.Array:
    """`color_jitter` with the drawn parameters where they apply, else the image unchanged."""
    jittered = color_jitter(image, parameters.brightness, parameters.contrast, parameters.saturation,
                            parameters.hue, parameters.order)
    return jnp.where(parameters.applied, jittered, image)


def random_color_jitter(
    key: jax.Array, image: jax.Array, strength: float, probability: float = 0.8
) -> jax.Array:
    """SimCLR's colour distortion (`sample_color_jitter`) applied to `image`."""
    return apply_color_jitter(image, sample_color_jitter(key, strength, probability))


def apply_grayscale(image: jax.Array, applied: jax.Array) -> jax.Array:
    """Where `applied`, every channel becomes the luma 0.2989 R + 0.5870 G + 0.1140 B (Rec. 601);
    a 1-channel image is returned unchanged."""
    if image.shape[-1] == 1:
        return image
    return jnp.where(applied, dm_pix.rgb_to_grayscale(image, keep_dims=True), image)


def random_grayscale(key: jax.Array, image: jax.Array, probability: float = 0.2) -> jax.Array:
    """`apply_grayscale` with probability `probability`."""
    return apply_grayscale(image, jax.random.bernoulli(key, probability))


def sample_gaussian_blur(key: jax.Array, probability: float = 0.5,
                         sigma_range: tuple[float, float] = (0.1, 2.0)) -> tuple[jax.Array, jax.Array]:
    """(whether to blur, with probability `probability`; σ ~ U[sigma_range])."""
    uniform = jax.random.uniform(key, (2,))
    return uniform[0] < probability, _scale(uniform[1], *sigma_range)


def apply_gaussian_blur(image: jax.Array, applied: jax.Array, sigma: jax.Array,
                        kernel_fraction: float = 0.1) -> jax.Array:
    """Where `applied`, convolve with the separable Gaussian g(x) ∝ exp(−x²/2σ²) normalised to sum
    1, over a kernel of 2·⌊k/2⌋+1 taps where k = ⌊kernel_fraction · height⌋ (SimCLR: 10% of the
    image side; zero padding at the borders)."""
    blurred = dm_pix.gaussian_blur(image, sigma, int(kernel_fraction * image.shape[0]))
    return jnp.where(applied, blurred, image)


def random_gaussian_blur(
    key: jax.Array,
    image: jax.Array,
    probability: float = 0.5,
    sigma_range: tuple[float, float] = (0.1, 2.0),
    kernel_fraction: float = 0.1,
) -> jax.Array:
    """`apply_gaussian_blur` with probability `probability` and σ ~ U[sigma_range]."""
    return apply_gaussian_blur(image, *sample_gaussian_blur(key, probability, sigma_range), kernel_fraction)


def affine(
    image: jax.Array,
    translation: jax.Array = (0.0, 0.0),
    rotation: jax.Array = 0.0,
    stretch: jax.Array = (1.0, 1.0),
) -> jax.Array:
    """Warp about the image centre c: output point p' = c + R(θ)·diag(stretch)·(p − c) + translation,
    with p = (row, column), θ = `rotation` in radians (counter-clockwise as displayed: θ = π/2 is
    `np.rot90`), bilinear sampling, zeros outside the image.

    The image is padded with one ring of zeros and sampled with edge extension, so a sample a
    rounding error outside the border interpolates toward zero instead of dropping to zero.
    """
    cos, sin = jnp.cos(rotation), jnp.sin(rotation)
    stretch = jnp.asarray(stretch, jnp.float32)
    inverse_rotation = jnp.array([[cos, sin], [-sin, cos]])
    inverse_linear = inverse_rotation / stretch[:, None]  # diag(1/stretch) · R(−θ)
    padded = jnp.pad(image, ((1, 1), (1, 1), (0, 0)))
    centre = (jnp.asarray(padded.shape[:2], jnp.float32) - 1.0) / 2.0
    offset = centre - inverse_linear @ (centre + jnp.asarray(translation, jnp.float32))
    matrix = jnp.eye(4).at[:2, :2].set(inverse_linear).at[:2, 3].set(offset)
    return dm_pix.affine_transform(padded, matrix, order=1, mode="nearest")[1:-1, 1:-1]


def random_affine(
    key: jax.Array,
    image: jax.Array,
    max_translation: float = 0.1,
    max_rotation_degrees: float = 15.0,
    max_stretch: float = 0.1,
) -> jax.Array:
    """`affine` with translation ~ U[±max_translation · size] pixels per axis, rotation
    ~ U[±max_rotation_degrees], stretch ~ U[1 ± max_stretch] per axis."""
    uniform = jax.random.uniform(key, (5,))
    size = jnp.asarray(image.shape[:2], jnp.float32)
    translation = _scale(uniform[:2], -max_translation, max_translation) * size
    rotation = jnp.deg2rad(_scale(uniform[2], -max_rotation_degrees, max_rotation_degrees))
    stretch = _scale(uniform[3:], 1.0 - max_stretch, 1.0 + max_stretch)
    return affine(image, translation, rotation, stretch)


@dataclasses.dataclass(frozen=True)
class ViewSettings:
    """The SimCLR view pipeline: random resized crop to `output_size`, horizontal flip, colour
    jitter (strength `jitter_strength`, probability `jitter_probability`), grayscale, blur."""

    output_size: tuple[int, int]
    area_range: tuple[float, float] = (0.08, 1.0)
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3)
    flip_probability: float = 0.5
    jitter_strength: float = 1.0
    jitter_probability: float = 0.8
    grayscale_probability: float = 0.2
    blur_probability: float = 0.0

    def __post_init__(self):
        for name in ("flip_probability", "jitter_probability", "grayscale_probability", "blur_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"augment.{name}={getattr(self, name)} is not a probability; "
                                f"pass --config.augment.{name}=<a value in [0, 1]>")
        low, high = self.area_range
        if not 0.0 < low <= high <= 1.0:
            raise UserError(f"augment.min_area={low} must be in (0, 1]; pass e.g. --config.augment.min_area=0.2")
        if self.jitter_strength < 0:
            raise UserError(f"augment.jitter_strength={self.jitter_strength} must be >= 0; "
                            "pass e.g. --config.augment.jitter_strength=0.5")

    @classmethod
    def from_config(cls, augment, output_size: tuple[int, int]) -> "ViewSettings":
        """From a config's `augment` block (min_area, flip/jitter/grayscale/blur probabilities and
        jitter_strength) at the dataset's `output_size`."""
        return cls(
            output_size=tuple(output_size), area_range=(augment.min_area, 1.0),
            flip_probability=augment.flip_probability, jitter_strength=augment.jitter_strength,
            jitter_probability=augment.jitter_probability,
            grayscale_probability=augment.grayscale_probability,
            blur_probability=augment.blur_probability,
        )


class ViewParameters(NamedTuple):
    """Every random draw of one view: the crop box `[top, left, height, width]`, the flip, the
    colour jitter, the grayscale conversion, the blur and its σ."""

    box: jax.Array
    flip: jax.Array
    jitter: JitterParameters
    grayscale: jax.Array
    blur: jax.Array
    sigma: jax.Array


def sample_view(key: jax.Array, settings: ViewSettings, height: int, width: int) -> ViewParameters:
    """The random parameters of one view of a `[height, width, c]` image under `settings`."""
    crop_key, flip_key, jitter_key, gray_key, blur_key = jax.random.split(key, 5)
    blur, sigma = sample_gaussian_blur(blur_key, settings.blur_probability)
    return ViewParameters(
        box=sample_crop_box(crop_key, height, width, settings.area_range, settings.aspect_range),
        flip=jax.random.bernoulli(flip_key, settings.flip_probability),
        jitter=sample_color_jitter(jitter_key, settings.jitter_strength, settings.jitter_probability),
        grayscale=jax.random.bernoulli(gray_key, settings.grayscale_probability),
        blur=blur, sigma=sigma,
    )


def apply_view(image: jax.Array, parameters: ViewParameters, settings: ViewSettings) -> jax.Array:
    """The view `[*settings.output_size, channels]` of one float image in [0, 1]: crop and resize,
    flip, colour jitter, grayscale, blur, in SimCLR's order."""
    view = crop_and_resize(image, parameters.box, settings.output_size)
    view = jax.lax.cond(parameters.flip, dm_pix.flip_left_right, lambda x: x, view)
    view = apply_color_jitter(view, parameters.jitter)
    view = apply_grayscale(view, parameters.grayscale)
    if settings.blur_probability > 0:
        view = apply_gaussian_blur(view, parameters.blur, parameters.sigma)
    return view


def augment_view(key: jax.Array, image: jax.Array, settings: ViewSettings) -> jax.Array:
    """One random view `[*settings.output_size, channels]` of one float image in [0, 1]."""
    return apply_view(image, sample_view(key, settings, image.shape[0], image.shape[1]), settings)


def simclr_views(
    key: jax.Array, images: jax.Array, settings: ViewSettings, first_index: jax.Array | int = 0
) -> tuple[jax.Array, jax.Array]:
    """Two independent views `[batch, *output_size, channels]` (float32 in [0, 1]) of `images`
    `[batch, height, width, channels]` (uint8 or float in [0, 1]).

    Example i uses the key `fold_in(key, first_index + i)`: pass `first_index = axis_index ·
    local_batch` inside a data-parallel step and every example gets the views it would get on one
    device.
    """
    indices = first_index + jnp.arange(images.shape[0])
    example_keys = jax.vmap(lambda index: jax.random.fold_in(key, index))(indices)

    def two_views(example_key, image):
        views = jax.vmap(augment_view, in_axes=(0, None, None))(
            jax.random.split(example_key), image, settings)
        return views[0], views[1]

    return jax.vmap(two_views)(example_keys, model_input(images))
