"""PixelCNN's masked convolution (van den Oord et al. 2016): a stride-1 convolution whose kernel is
multiplied by a constant 0/1 mask so that the output at a pixel sees only the pixels before it in
raster order and, within the pixel, only the colours before it (R, then G, then B).

Spatially (kernel `[kh, kw, in, out]`, odd sizes, centre (kh // 2, kw // 2)): the rows above the
centre and the centre row left of the centre are visible, the rows below and the centre row right
of the centre are not. At the centre, the colour rule: input and output features are split into
`color_channels` groups by **feature index modulo C** (feature f belongs to group f mod C, as van
den Oord et al.; the image itself has exactly C channels, channel c in group c). Under mask "A" an
output of group g sees the centre's inputs of groups < g (R sees nothing of the current pixel, G
sees R, B sees R and G); mask "B" also lets each group see itself (groups ≤ g). Mask A is for the
first layer (whose input is the image); mask B for the layers after it, whose group-g features at a
pixel already exclude that pixel's colours ≥ g.

The f mod C grouping survives splitting a width that is a multiple of C into contiguous blocks (the
gates of the gated PixelCNN and the Row LSTM), and turns the last layer's C·levels features into
logits by a reshape to `[levels, C]`.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from visionax.layers.conv import conv_general_dilated_for

__all__ = ["MASK_TYPES", "MaskedConv", "pixelcnn_mask"]

MASK_TYPES = ("A", "B")


def pixelcnn_mask(kernel_size: Sequence[int], in_features: int, out_features: int, mask_type: str,
                  color_channels: int) -> np.ndarray:
    """The 0/1 mask `[kh, kw, in_features, out_features]` (float32) of a PixelCNN convolution:
    1 above the centre row and left of the centre in the centre row; at the centre, 1 where
    group(in) < group(out) (mask "A") or ≤ (mask "B"), with group(f) = f mod color_channels."""
    height, width = kernel_size
    if height % 2 == 0 or width % 2 == 0:
        raise ValueError(f"kernel_size {tuple(kernel_size)}: a masked convolution needs odd sizes (a centre)")
    if mask_type not in MASK_TYPES:
        raise ValueError(f"mask_type {mask_type!r}: choose 'A' (first layer) or 'B'")
    if color_channels < 1:
        raise ValueError(f"color_channels={color_channels} must be >= 1")
    centre_row, centre_column = height // 2, width // 2
    mask = np.zeros((height, width, in_features, out_features), np.float32)
    mask[:centre_row] = 1.0
    mask[centre_row, :centre_column] = 1.0
    in_groups = np.arange(in_features)[:, None] % color_channels
    out_groups = np.arange(out_features)[None, :] % color_channels
    visible = in_groups < out_groups if mask_type == "A" else in_groups <= out_groups
    mask[centre_row, centre_column] = visible
    return mask


class MaskedConv(nn.Module):
    """y = conv(x, W ⊙ M) + b with M = `pixelcnn_mask(...)`: stride 1, padding that keeps the size
    (kernel centred on each pixel, zeros outside), NHWC inputs `[N, H, W, in]` → `[N, H, W, features]`.

    The module owns its kernel `[kh, kw, in, features]` ("kernel"; masked entries stay at their
    initial values and get zero gradient) and its bias ("bias"); the convolution is computed by
    `conv_impl` (any name of `visionax.layers.conv.CONV_IMPLS`).
    """

    features: int
    kernel_size: Sequence[int]
    mask_type: str = "B"
    color_channels: int = 1
    use_bias: bool = True
    conv_impl: str = "xla"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        height, width = self.kernel_size
        in_features = x.shape[-1]
        mask = pixelcnn_mask((height, width), in_features, self.features, self.mask_type, self.color_channels)
        kernel = self.param("kernel", self.kernel_init, (height, width, in_features, self.features),
                            self.param_dtype)
        masked = (kernel * jnp.asarray(mask, self.param_dtype)).astype(self.dtype)
        convolve = conv_general_dilated_for(self.conv_impl)
        y = convolve(x.astype(self.dtype), masked, (1, 1), ((height // 2, height // 2), (width // 2, width // 2)),
                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), self.param_dtype).astype(self.dtype)
        return y
