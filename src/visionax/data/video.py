"""Synthetic videos of coloured digits, squares and discs moving over a textured background, with the
mask of every object in every frame: the data of colourisation-as-tracking (Vondrick et al. 2018),
made in NumPy from a seed (no download, no TFDS).

A video holds `objects` objects drawn in a fixed order (a later object covers an earlier one, in
every frame) over a static background. Each object is a sprite of side s ~ uniform{min_size..max_size}:
an embedded 8×8 digit of the split (the digits builder's fixed stratified split: test videos use only
test digits) resized to s×s by nearest neighbour and thresholded at 128, a filled square, or a disc
(pixel centres within s/2 of the sprite's centre), one of the three with equal chance. Colours are
drawn in CIE L*a*b* (`visionax.data.color.lab_to_rgb`, out-of-gamut colours clipped) and kept through
the video. The objects of a video are nearly isoluminant: L*_k = L₀ + U(−lightness_spread,
lightness_spread) around one L₀ ~ U(40, 80), chroma ~ U(35, 55), hue angle h_k = 2π (h₀ + (k + u_k) /
objects) with u_k ~ U(−0.3, 0.3) (spread around the circle, so no two share a hue): a grey frame says
where objects are but hardly which is which, so their colours can be copied from a reference frame
only by finding the same object (colour is not predictable from grey: the premise of colourisation
as tracking). The background is one colour (L* ~ U(30, 85), chroma ~ U(5, 20), any hue) times
(1 + texture · n) per pixel and channel-wise alike, n ~ U(−1, 1) drawn once per video. Each object
wears its own stripes, painted on the sprite and moving with it: its colour times
1 + stripes · sin(2π (y cos θ + x sin θ) / period + φ) at the sprite's pixel centres (y, x), θ ~ U(0, π),
period ~ U(3, 6) pixels, φ ~ U(0, 2π) (grey texture a CNN can recognise, pixel values that overlap from
object to object). Camera noise:
every pixel of frame t (objects and background) is then multiplied by (1 + noise · e_t), the same for
its three channels, e_t ~ U(−1, 1) drawn anew for every frame, so no pixel keeps its exact value.

Motion: the sprite's top-left corner p_t (integers, in [0, H − s] × [0, W − s]) moves with constant
velocity v ∈ {−max_speed..max_speed}², v ≠ 0, and bounces: p_{t+1} = p_t + v_t, and a coordinate
that leaves [0, limit] is reflected (x → −x below 0, x → 2·limit − x above) while that component of
v changes sign for the next steps. Video k of a split is drawn by
`numpy.random.default_rng([seed, split number, k])`, so it depends on (seed, split, k) alone.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
import numpy as np

from visionax.data.builders.digits import source_digits, split_indices
from visionax.data.color import lab_to_rgb
from visionax.errors import UserError

SPLIT_NUMBERS = {"train": 0, "test": 1}
KINDS = ("digit", "square", "disc")
DIGIT_THRESHOLD = 128  # digit pixels (0..255) at or above this belong to the object
_LAB_TO_RGB = jax.jit(lab_to_rgb)  # compiled once per number of colours: a video draws two sets

__all__ = ["KINDS", "VideoSettings", "moving_objects", "moving_objects_video"]


@dataclasses.dataclass(frozen=True)
class VideoSettings:
    """The shape of every video: `frames` frames of `height`×`width`×3, `objects` sprites of side
    `min_size`..`max_size` moving at up to `max_speed` pixels a frame per axis, background texture
    amplitude `texture` and per-frame camera noise amplitude `noise` (fractions of a pixel's colour),
    objects' L* within ±`lightness_spread` of one another's centre. Validated here, once."""

    frames: int = 8
    height: int = 32
    width: int = 32
    objects: int = 3
    min_size: int = 8
    max_size: int = 12
    max_speed: int = 2
    texture: float = 0.1
    noise: float = 0.02
    lightness_spread: float = 3.0
    stripes: float = 0.25

    def __post_init__(self):
        for name in ("frames", "height", "width", "objects", "min_size", "max_speed"):
            if getattr(self, name) < 1:
                raise UserError(f"video {name}={getattr(self, name)} must be >= 1; pass e.g. --config.data.{name}="
                                f"{getattr(VideoSettings, name)}")
        if self.frames < 2:
            raise UserError(f"video frames={self.frames} must be >= 2 (a first frame and one to track into); "
                            "pass e.g. --config.data.frames=8")
        if not self.min_size <= self.max_size <= min(self.height, self.width) - self.max_speed:
            raise UserError(f"video sizes min_size={self.min_size}, max_size={self.max_size} need min_size <= "
                            f"max_size <= min(height, width) - max_speed = "
                            f"{min(self.height, self.width) - self.max_speed}; pass smaller sizes or larger frames")
        if not 0 <= self.lightness_spread <= 40:
            raise UserError(f"video lightness_spread={self.lightness_spread} must be in [0, 40] (L* units); pass "
                            "e.g. --config.data.lightness_spread=3")
        for name in ("texture", "noise", "stripes"):
            if not 0 <= getattr(self, name) < 1:
                raise UserError(f"video {name}={getattr(self, name)} must be in [0, 1); pass e.g. "
                                f"--config.data.{name}=0.1")

    @classmethod
    def from_config(cls, data: ml_collections.ConfigDict) -> "VideoSettings":
        return cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})


def _lab_colors(lightness: np.ndarray, chroma: np.ndarray, hue: np.ndarray) -> np.ndarray:
    """float64 sRGB `[k, 3]` in [0, 1] of the L*a*b* colours (L*, C cos 2πh, C sin 2πh)."""
    angle = 2 * np.pi * hue
    lab = np.stack([lightness, chroma * np.cos(angle), chroma * np.sin(angle)], axis=-1)
    return np.asarray(_LAB_TO_RGB(lab.astype(np.float32)), np.float64)


def _sprite(generator: np.random.Generator, size: int, kind: str, digits: np.ndarray) -> np.ndarray:
    """bool `[size, size]`: the pixels the object covers."""
    if kind == "square":
        return np.ones((size, size), bool)
    if kind == "disc":
        centres = np.arange(size) + 0.5 - size / 2
        return centres[:, None] ** 2 + centres[None, :] ** 2 <= (size / 2) ** 2
    digit = digits[generator.integers(len(digits))]
    nearest = np.arange(size) * digit.shape[0] // size
    return digit[np.ix_(nearest, nearest)] >= DIGIT_THRESHOLD


def _stripes(generator: np.random.Generator, size: int, amplitude: float) -> np.ndarray:
    """float `[size, size, 1]`: 1 + amplitude · sin(2π (y cos θ + x sin θ) / period + φ) at the pixel
    centres (y, x) of the sprite, θ ~ U(0, π), period ~ U(3, 6) pixels, φ ~ U(0, 2π)."""
    angle, period, phase = generator.uniform(0, np.pi), generator.uniform(3, 6), generator.uniform(0, 2 * np.pi)
    rows, columns = np.mgrid[:size, :size] + 0.5
    wave = np.sin(2 * np.pi * (rows * np.cos(angle) + columns * np.sin(angle)) / period + phase)
    return (1 + amplitude * wave)[..., None]


def _bounce(position: np.ndarray, velocity: np.ndarray, limit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(p + v reflected into [0, limit], v with the reflected components' signs flipped)."""
    moved = position + velocity
    below, above = moved < 0, moved > limit
    moved = np.where(below, -moved, np.where(above, 2 * limit - moved, moved))
    return moved, np.where(below | above, -velocity, velocity)


def moving_objects_video(generator: np.random.Generator, settings: VideoSettings, digits: np.ndarray) -> dict:
    """One video drawn by `generator` with the sprites' digits taken from `digits` (uint8 `[m, 8, 8]`):
    `{"frames": uint8 [T, H, W, 3], "masks": int32 [T, H, W]` (k + 1 where object k is the visible one,
    0 background), `"colors": uint8 [objects, 3]`, `"kinds": int32 [objects]` (indices of KINDS),
    `"positions": int32 [T, objects, 2]` (top, left of each sprite), `"velocities": int32 [T, objects, 2]`
    (the velocity v_t that takes frame t to frame t + 1)}."""
    count, frames = settings.objects, settings.frames
    hues = generator.uniform() + (np.arange(count) + generator.uniform(-0.3, 0.3, count)) / count
    spread = settings.lightness_spread
    lightness = generator.uniform(40, 80) + generator.uniform(-spread, spread, count)
    colors = _lab_colors(lightness, generator.uniform(35, 55, count), hues)
    background_color = _lab_colors(generator.uniform(30, 85, 1), generator.uniform(5, 20, 1),
                                   generator.uniform(size=1))[0]
    texture = 1 + settings.texture * generator.uniform(-1, 1, (settings.height, settings.width, 1))
    background = np.clip(background_color * texture, 0, 1)
    kinds = generator.integers(len(KINDS), size=count)
    sizes = generator.integers(settings.min_size, settings.max_size + 1, size=count)
    sprites = [_sprite(generator, size, KINDS[kind], digits) for size, kind in zip(sizes, kinds)]
    patterns = [_stripes(generator, size, settings.stripes) for size in sizes]
    limits = np.stack([settings.height - sizes, settings.width - sizes], axis=1)
    position = np.stack([generator.integers(0, limit + 1) for limit in limits.ravel()]).reshape(count, 2)
    velocity = generator.integers(-settings.max_speed, settings.max_speed + 1, size=(count, 2))
    still = ~velocity.any(axis=1)
    velocity[still, 0] = settings.max_speed  # v ≠ 0: an object that stands still teaches no motion
    images = np.repeat(background[None], frames, axis=0)
    masks = np.zeros((frames, settings.height, settings.width), np.int32)
    positions = np.zeros((frames, count, 2), np.int32)
    velocities = np.zeros((frames, count, 2), np.int32)
    for t in range(frames):
        positions[t], velocities[t] = position, velocity
        for k, (sprite, (top, left)) in enumerate(zip(sprites, position)):
            size = len(sprite)
            images[t, top:top + size, left:left + size][sprite] = (colors[k] * patterns[k])[sprite]
            masks[t, top:top + size, left:left + size][sprite] = k + 1
        position, velocity = _bounce(position, velocity, limits)
    if settings.noise:
        images *= 1 + settings.noise * generator.uniform(-1, 1, (frames, settings.height, settings.width, 1))
    images = np.round(np.clip(images, 0, 1) * 255).astype(np.uint8)
    colors_uint8 = np.round(colors * 255).astype(np.uint8)
    return {"frames": images, "masks": masks, "colors": colors_uint8, "kinds": kinds.astype(np.int32),
            "sizes": sizes.astype(np.int32), "positions": positions, "velocities": velocities}


def moving_objects(count: int, settings: VideoSettings = VideoSettings(), *, seed: int = 0,
                   split: str = "train") -> dict:
    """`count` videos of `split` ("train" or "test") stacked: every entry of `moving_objects_video`
    with a leading axis `[count, ...]`; video k is drawn by `default_rng([seed, split number, k])`."""
    if split not in SPLIT_NUMBERS:
        raise UserError(f"unknown video split {split!r}; use one of {sorted(SPLIT_NUMBERS)}")
    if count < 1:
        raise UserError(f"a video set needs count >= 1 videos, got {count}; pass e.g. --config.data.num_train=1024")
    images, labels = source_digits()
    digits = images[split_indices(labels)[split]]
    videos = [moving_objects_video(np.random.default_rng([seed, SPLIT_NUMBERS[split], index]), settings, digits)
              for index in range(count)]
    return {key: np.stack([video[key] for video in videos]) for key in videos[0]}
