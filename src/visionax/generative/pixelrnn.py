"""PixelRNN's Row LSTM (van den Oord et al. 2016, "Pixel Recurrent Neural Networks"): the image is
read row by row, top to bottom, by LSTM layers whose state at a pixel is computed from the previous
row's states around it and the current row's inputs to its left (and its own earlier colours).

Same contract as `visionax.generative.pixelcnn.PixelCNN`: float images `[N, H, W, C]` in [0, 1]
(`pixelcnn.level_input`) → logits `[N, H, W, C, levels]`, causal in raster-then-channel order.

A 7×7 mask-A convolution to `features` channels, `depth` Row LSTM layers each added to its input
(residual), and the output layers `pixelcnn.LevelLogits`. A Row LSTM layer on x `[N, H, W, F]`:

    [i, f, o, g]_r = σ, σ, σ, tanh(K_ss ⊛ h_{r−1} + K_is ⊛ x_r),  c_r = f ⊙ c_{r−1} + i ⊙ g,
    h_r = o ⊙ tanh(c_r),

for every row r with h₀ = c₀ = 0: K_is a 1×k mask-B convolution along the row (the input-to-state,
computed for the whole map at once), K_ss an unmasked 1×k convolution of the previous row's hidden
states (the state-to-state; they hold only rows above), the rows run by `lax.scan`. The F features
of every gate, state and output are grouped by colour like the masks (feature f in group f mod C),
so F must be divisible by C. The receptive field is a triangle above the pixel (k columns wider
per row up), not the whole past.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from visionax.generative.pixelcnn import LevelLogits
from visionax.layers.conv import conv_general_dilated_for
from visionax.layers.masked_conv import MaskedConv
from visionax.layers.recurrent import lstm_gates

__all__ = ["RowLSTMLayer", "RowLSTM"]


class RowLSTMLayer(nn.Module):
    """One Row LSTM layer: x `[N, H, W, F_in]` → every row's hidden states `[N, H, W, features]`."""

    features: int
    kernel_size: int = 3
    color_channels: int = 1
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.features % self.color_channels:
            raise ValueError(f"features={self.features} must be divisible by color_channels={self.color_channels}")
        half = self.kernel_size // 2
        input_to_state = MaskedConv(4 * self.features, (1, self.kernel_size), "B", self.color_channels,
                                    conv_impl=self.conv_impl, dtype=self.dtype, name="input_to_state")(x)
        state_kernel = self.param("state_to_state", nn.initializers.lecun_normal(),
                                  (1, self.kernel_size, self.features, 4 * self.features)).astype(self.dtype)
        convolve = conv_general_dilated_for(self.conv_impl)

        def row(carry, row_inputs):
            hidden, cell = carry  # [N, W, features] each, the previous row's
            recurrent = convolve(hidden[:, None], state_kernel, (1, 1), ((0, 0), (half, half)),
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))[:, 0]
            hidden, cell = lstm_gates(row_inputs + recurrent, cell)
            return (hidden, cell), hidden

        batch, _, width, _ = x.shape
        zeros = jnp.zeros((batch, width, self.features), self.dtype)
        _, rows = lax.scan(row, (zeros, zeros), jnp.swapaxes(input_to_state, 0, 1))
        return jnp.swapaxes(rows, 0, 1)


class RowLSTM(nn.Module):
    """PixelRNN's Row LSTM: a `first_kernel_size`² mask-A convolution, `depth` residual Row LSTM
    layers of `features` units (1×`kernel_size` convolutions), the output layers."""

    levels: int
    color_channels: int = 1
    features: int = 32
    depth: int = 2
    kernel_size: int = 3
    first_kernel_size: int = 7
    output_features: int = 64
    conv_impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = MaskedConv(self.features, (self.first_kernel_size,) * 2, "A", self.color_channels,
                       conv_impl=self.conv_impl, dtype=self.dtype)(images.astype(self.dtype))
        for _ in range(self.depth):
            x = x + RowLSTMLayer(self.features, self.kernel_size, self.color_channels, self.conv_impl, self.dtype)(x)
        return LevelLogits(self.levels, self.color_channels, self.output_features, self.conv_impl, self.dtype)(x)
