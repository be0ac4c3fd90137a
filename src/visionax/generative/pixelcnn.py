"""PixelCNN (van den Oord et al. 2016, "Pixel Recurrent Neural Networks") and the gated PixelCNN
("Conditional Image Generation with PixelCNN Decoders"): p(x) = Π_i Π_c p(x_{i,c} | x_{<i}, x_{i,<c}),
each factor a softmax over `levels` values, computed for every sub-pixel at once by masked
convolutions (`visionax.layers.masked_conv`).

Input: the image quantised to `levels` values (`visionax.generative.likelihood.quantize`) scaled to
[0, 1] by `level_input` (q / (levels − 1)), float `[N, H, W, C]`; output: float32 logits
`[N, H, W, C, levels]` whose entry (n, i, c) depends only on the sub-pixels before (i, c) in
raster-then-channel order. Colours are grouped by feature index mod C (`masked_conv`).

* Plain (`gated=False`): a k₀×k₀ mask-A convolution (k₀ = 7) to `features` channels, `depth`
  residual blocks x + 1×1(ReLU(k×k(ReLU(1×1(ReLU(x)))))) of mask-B convolutions through a
  bottleneck of `features` / 2, and the output layers. Its receptive field has a blind spot: the
  stacked masks never reach up-right pixels more than one column right per row up.
* Gated (`gated=True`): a vertical stack (a (k//2 + 1)×k convolution of the rows at and above each
  pixel, no mask) and a horizontal stack (a 1×k mask-A, then mask-B convolution along the row,
  colours masked); each layer gates tanh(a) ⊙ σ(b) of the two halves of 2·`features` convolution
  outputs, the vertical stack's pre-activations are shifted down one row (so they hold only rows
  above) and added through a 1×1 convolution to the horizontal ones, and the horizontal stack is
  residual after its first layer. With reach R = k₀//2 + depth·(k//2), the logits at (i, j) see every
  pixel of rows i − R − 1 .. i − 1 at columns j − R .. j + R and of row i at columns j − R .. j − 1:
  a full rectangle, no blind spot.

Both end with the output layers `LevelLogits`: ReLU, 1×1 mask-B convolution (`output_features`),
ReLU, 1×1 mask-B convolution to C·levels features reshaped to `[C, levels]`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.layers.conv import conv_module
from visionax.layers.masked_conv import MaskedConv

__all__ = ["level_input", "LevelLogits", "GatedLayer", "PixelCNN", "gate", "shift_down"]


def level_input(values: jax.Array, levels: int) -> jax.Array:
    """Integer levels `[N, H, W, C]` (0..levels−1) as the models' float32 input in [0, 1]: q / (levels − 1)."""
    return jnp.asarray(values, jnp.float32) / (levels - 1)


def gate(pre_activations: jax.Array) -> jax.Array:
    """The gated activation tanh(a) ⊙ σ(b) of the two halves [a, b] of the last axis `[..., 2F]` → `[..., F]`."""
    a, b = jnp.split(pre_activations, 2, axis=-1)
    return jnp.tanh(a) * jax.nn.sigmoid(b)


def shift_down(x: jax.Array) -> jax.Array:
    """`[N, H, W, F]` moved down one row, a zero row on top: out[:, i] = x[:, i − 1]."""
    return jnp.pad(x[:, :-1], ((0, 0), (1, 0), (0, 0), (0, 0)))


class LevelLogits(nn.Module):
    """ReLU, 1×1 mask-B convolution to `features`, ReLU, 1×1 mask-B convolution to C·levels: float32
    logits `[N, H, W, C, levels]` (feature l·C + c is the logit of level l of colour c)."""

    levels: int
    color_channels: int
    features: int
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        options = dict(mask_type="B", color_channels=self.color_channels, conv_impl=self.conv_impl, dtype=self.dtype)
        x = MaskedConv(self.features, (1, 1), **options)(nn.relu(x))
        x = MaskedConv(self.levels * self.color_channels, (1, 1), **options)(nn.relu(x))
        logits = x.reshape(*x.shape[:-1], self.levels, self.color_channels)
        return jnp.swapaxes(logits, -1, -2).astype(jnp.float32)


class GatedLayer(nn.Module):
    """One layer of the gated PixelCNN on (vertical `[N, H, W, Fv]`, horizontal `[N, H, W, Fh]`):

    v' = gate(V ⊛ v), h' = [h +] W₁ₓ₁ gate(H ⊛ h + L ⊛ shift_down(V ⊛ v)),

    V a (k//2 + 1)×k convolution of the rows i − k//2..i, H a 1×k `mask_type` convolution along the
    row (colours masked), L and W₁ₓ₁ 1×1 convolutions (W₁ₓ₁ mask B); `residual` adds h."""

    features: int
    kernel_size: int
    mask_type: str
    color_channels: int
    residual: bool
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, vertical: jax.Array, horizontal: jax.Array) -> tuple[jax.Array, jax.Array]:
        half = self.kernel_size // 2
        conv = conv_module(self.conv_impl)
        vertical_pre = conv(2 * self.features, (half + 1, self.kernel_size), padding=((half, 0), (half, half)),
                            dtype=self.dtype, name="vertical")(vertical)
        link = conv(2 * self.features, (1, 1), dtype=self.dtype, name="link")(shift_down(vertical_pre))
        masked = dict(color_channels=self.color_channels, conv_impl=self.conv_impl, dtype=self.dtype)
        horizontal_pre = MaskedConv(2 * self.features, (1, self.kernel_size), self.mask_type, **masked,
                                    name="horizontal")(horizontal) + link
        out = MaskedConv(self.features, (1, 1), "B", **masked, name="horizontal_out")(gate(horizontal_pre))
        return gate(vertical_pre), horizontal + out if self.residual else out


class PixelCNN(nn.Module):
    """The PixelCNN (`gated=False`) or gated PixelCNN (`gated=True`): float images `[N, H, W, C]` in
    [0, 1] (`level_input`) → logits `[N, H, W, C, levels]`, C = `color_channels`.

    `features`: the width of the residual stream (plain: its blocks' bottleneck is half of it;
    gated: each stack's width); `depth`: residual blocks (plain) or gated layers after the first;
    `kernel_size`: of the blocks' k×k (plain) or the stacks' (gated) convolutions; the first layer's
    is `first_kernel_size`. The gated model needs `features` divisible by `color_channels`.
    """

    levels: int
    color_channels: int = 1
    features: int = 64
    depth: int = 4
    kernel_size: int = 3
    first_kernel_size: int = 7
    output_features: int = 64
    gated: bool = False
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = images.astype(self.dtype)
        masked = dict(color_channels=self.color_channels, conv_impl=self.conv_impl, dtype=self.dtype)
        if self.gated:
            if self.features % self.color_channels:
                raise ValueError(f"features={self.features} must be divisible by color_channels="
                                 f"{self.color_channels} (the gates split the features in two)")
            vertical, horizontal = x, x
            for layer in range(self.depth + 1):
                vertical, horizontal = GatedLayer(
                    self.features, self.first_kernel_size if layer == 0 else self.kernel_size,
                    "A" if layer == 0 else "B", residual=layer > 0, **masked)(vertical, horizontal)
            x = horizontal
        else:
            bottleneck = max(self.features // 2, 1)
            x = MaskedConv(self.features, (self.first_kernel_size,) * 2, "A", **masked)(x)
            for _ in range(self.depth):
                y = MaskedConv(bottleneck, (1, 1), "B", **masked)(nn.relu(x))
                y = MaskedConv(bottleneck, (self.kernel_size,) * 2, "B", **masked)(nn.relu(y))
                x = x + MaskedConv(self.features, (1, 1), "B", **masked)(nn.relu(y))
        return LevelLogits(self.levels, self.color_channels, self.output_features, self.conv_impl, self.dtype)(x)
