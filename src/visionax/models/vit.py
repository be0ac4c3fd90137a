"""ViT — Dosovitskiy et al., "An Image is Worth 16x16 Words: Transformers for Image Recognition at
Scale" (ICLR 2021), on the Transformer of Vaswani et al., "Attention Is All You Need" (NeurIPS 2017).

The idea: no convolutions beyond the first cut. The image is cut into P×P patches, each patch is
flattened and linearly projected to a `width`-dimensional token (a P×P convolution of stride P:
the same numbers as a Dense layer on the flattened patches), a learned class token is put in
front, learned position embeddings are added (attention itself is blind to order), and a stack of
pre-norm Transformer encoder blocks mixes the tokens:

    x = x + MHA(LN(x));   x = x + MLP(LN(x)),   MLP(z) = W2 GELU(W1 z + b1) + b2  (mlp_dim = 4·width)

A final LayerNorm, then the head reads the class token only: logits = head(LN(x)[:, 0]). With
`num_classes=None` (or 0) the model is an encoder returning that class-token feature `[batch,
width]` (SimCLR, MoCo). Layout and parameter counts are timm's `vit_*_patch*_224` and
torchvision's `vit_b_16`, `vit_b_32`, `vit_l_16` (biases on q, k, v; LayerNorm ε = 1e-6; exact
GELU): 5,717,416 (tiny/16), 22,050,664 (small/16), 86,567,656 (base/16), 88,224,232 (base/32),
304,326,632 (large/16) at 224×224 and 1000 classes. The attention is
`visionax.layers.attention.MultiHeadAttention` (separate query/key/value projections: the same
parameters as timm's fused qkv), the LayerNorm `visionax.layers.norm.LayerNorm`, dropout and
stochastic depth `visionax.layers.regularize`'s.

Options (`get_model("vit_tiny_16", patch_size=4, width=128, depth=6, num_heads=4, mlp_dim=256)`):
`patch_size`, `width` (token dimension), `depth` (blocks), `num_heads`, `mlp_dim` (default
4·width) replace the named model's architecture; `dropout` (after the position embedding, the
attention output and both MLP layers, as torchvision), `attention_dropout` (on the attention
weights), `drop_path` (stochastic depth: block i's residual branches dropped per example with
rate drop_path·i/(depth−1), as timm), `head_zero_init`, `dtype` (computation dtype; parameters
stay float32), `conv_impl` (the patch-embedding convolution, `visionax.layers.conv`) and
`bn_axis_name` (accepted for a uniform encoder signature; a no-op: ViT has no BatchNorm).
`train=True` with any dropout rate > 0 needs `rngs={"dropout": key}`.

Resolution: any image size divisible by `patch_size`. The position embedding `[1, 1 + gh·gw,
width]` is created at `init` for the init resolution's gh×gw patch grid. Applied to images of
another size, the patch part of it is resampled bilinearly (`resample_position_embedding`; the
class token's row is kept), as when a ViT is fine-tuned at a higher resolution; this needs a
square init grid (a non-square one is only usable at its own size).

Initialisation (big_vision / torchvision in spirit): the patch embedding LeCun normal
(fan-in), MLP kernels Xavier (Glorot) uniform, every bias zero, the class token zero, the
position embedding N(0, 0.02²), the head zero (`head_zero_init=True`, as big_vision and
torchvision; False: LeCun normal). The attention projections keep `MultiHeadAttention`'s own
initialisation (flax's Dense default: LeCun normal kernels, zero biases).

Precision: with `dtype=bfloat16` the patch embedding, attention, MLPs and head compute in bf16
with float32 parameters; LayerNorm statistics are float32 (`_stats`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.errors import UserError
from visionax.layers.attention import MultiHeadAttention
from visionax.layers.norm import LayerNorm
from visionax.layers.regularize import Dropout, drop_path
from visionax.models.common import FEATURE_MAP, conv_def, dense_def

__all__ = ["CONFIGS", "ViT", "ViTArch", "EncoderBlock", "MlpBlock", "resample_position_embedding"]

LN_EPSILON = 1e-6  # timm's and torchvision's ViT LayerNorm
MLP_RATIO = 4
POS_EMBEDDING_STD = 0.02

@dataclasses.dataclass(frozen=True)
class ViTArch:
    """A ViT's shape: patch size P, token width D, `depth` blocks, `num_heads` heads (D/heads features
    each) and the MLP's hidden size (None: MLP_RATIO·width)."""

    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int | None = None

    @property
    def hidden(self) -> int:
        return self.mlp_dim if self.mlp_dim is not None else MLP_RATIO * self.width


def resample_position_embedding(pos: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """`pos` `[1, 1 + s·s, D]` (class token first, then an s×s grid in row-major order) → `[1, 1 +
    gh·gw, D]`: the grid resized bilinearly (half-pixel centres, no antialiasing) to `grid` = (gh, gw),
    the class token's row unchanged. The identity when the grid already has that size."""
    tokens = pos.shape[1] - 1
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise UserError(f"the ViT was initialised with a non-square grid of {tokens} patches, so its "
                        f"position embedding cannot be resampled to {grid[0]}×{grid[1]} patches; apply "
                        "it at its init resolution, or init it at a square one")
    if (side, side) == tuple(grid):
        return pos
    patches = pos[:, 1:].reshape(1, side, side, pos.shape[-1])
    resized = jax.image.resize(patches.astype(jnp.float32), (1, *grid, pos.shape[-1]), "bilinear",
                               antialias=False).astype(pos.dtype)
    return jnp.concatenate([pos[:, :1], resized.reshape(1, grid[0] * grid[1], pos.shape[-1])], axis=1)


class MlpBlock(nn.Module):
    """The Transformer's MLP: fc2(dropout(GELU(fc1(x)))), then dropout; `hidden` units."""

    hidden: int
    dropout: float = 0.0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        dense = dense_def(self.dtype, kernel_init=nn.initializers.xavier_uniform(),
                          bias_init=nn.initializers.zeros)
        width = x.shape[-1]
        y = jax.nn.gelu(dense(self.hidden, name="fc1")(x), approximate=False)  # exact (erf) GELU
        y = Dropout(self.dropout)(y, train=train)
        y = dense(width, name="fc2")(y)
        return Dropout(self.dropout)(y, train=train)


class EncoderBlock(nn.Module):
    """A pre-norm Transformer encoder block: x + MHA(LN(x)), then x + MLP(LN(x)); each residual
    branch dropped per example with probability `drop_path` in training (stochastic depth)."""

    num_heads: int
    hidden: int
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    dtype: Any = jnp.float32

    def _residual(self, x, branch, train):
        if train and self.drop_path > 0.0:
            branch = drop_path(branch, self.drop_path, self.make_rng("dropout"))
        return x + branch

    @nn.compact
    def __call__(self, x, train: bool = False):
        width = x.shape[-1]
        y = LayerNorm(epsilon=LN_EPSILON, name="ln1")(x).astype(self.dtype)
        attention = MultiHeadAttention(width, self.num_heads, self.attention_dropout, dtype=self.dtype,
                                       name="attention")
        y = attention(y, train=train).astype(self.dtype)
        y = Dropout(self.dropout)(y, train=train)
        x = self._residual(x, y, train)
        y = LayerNorm(epsilon=LN_EPSILON, name="ln2")(x).astype(self.dtype)
        y = MlpBlock(self.hidden, self.dropout, self.dtype, name="mlp")(y, train=train)
        return self._residual(x, y, train)


def _check_rate(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise UserError(f"ViT {name} must be a rate in [0, 1), not {value!r}")


class ViT(nn.Module):
    """Vision Transformer (class token, learned position embeddings, pre-norm blocks). `arch` is
    fixed by the model's name; `patch_size`, `width`, `depth`, `num_heads`, `mlp_dim` override it."""

    arch: ViTArch
    num_classes: int | None = 1000
    patch_size: int | None = None
    width: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_dim: int | None = None
    dropout: float = 0.0
    attention_dropout: float = 0.0
    drop_path: float = 0.0
    head_zero_init: bool = True
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # no BatchNorm: accepted, ignored
    conv_impl: str = "xla"

    def __post_init__(self):
        arch = self.resolved
        for name in ("patch_size", "width", "depth", "num_heads", "hidden"):
            value = getattr(arch, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                label = "mlp_dim" if name == "hidden" else name
                raise UserError(f"ViT {label} must be a positive integer, not {value!r}")
        if arch.width % arch.num_heads:
            raise UserError(f"ViT width {arch.width} is not divisible by num_heads {arch.num_heads}; "
                            "choose a width that is a multiple of the number of heads")
        for name in ("dropout", "attention_dropout", "drop_path"):
            _check_rate(name, getattr(self, name))
        super().__post_init__()

    @property
    def resolved(self) -> ViTArch:
        """The architecture: the named one with the given options replacing its fields (mlp_dim
        follows a changed width at MLP_RATIO·width unless it is given too)."""
        changes = {name: getattr(self, name) for name in ("patch_size", "width", "depth", "num_heads",
                                                          "mlp_dim") if getattr(self, name) is not None}
        return dataclasses.replace(self.arch, **changes)

    @nn.compact
    def __call__(self, x, train: bool = False):
        arch = self.resolved
        batch, height, width, _ = x.shape
        p = arch.patch_size
        if height % p or width % p:
            raise UserError(f"ViT with patch_size {p} needs an image size divisible by {p}, not "
                            f"{height}×{width}; resize or crop the images, or choose another patch_size")
        grid = (height // p, width // p)
        conv = conv_def(self.conv_impl, self.dtype, use_bias=True,
                        kernel_init=nn.initializers.lecun_normal(), bias_init=nn.initializers.zeros)
        x = jnp.asarray(x, self.dtype)
        x = conv(arch.width, (p, p), (p, p), padding="VALID", name="embedding")(x)
        x = x.reshape(batch, grid[0] * grid[1], arch.width)

        cls = self.param("cls", nn.initializers.zeros, (1, 1, arch.width), jnp.float32)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(self.dtype), (batch, 1, arch.width)), x], axis=1)
        # Created for the init grid; at apply time its stored shape is used (and resampled if needed).
        shape = (1, 1 + grid[0] * grid[1], arch.width)
        if self.has_variable("params", "pos_embedding"):
            shape = self.get_variable("params", "pos_embedding").shape
        pos = self.param("pos_embedding", nn.initializers.normal(POS_EMBEDDING_STD), shape, jnp.float32)
        if pos.shape[1] != x.shape[1]:
            pos = resample_position_embedding(pos, grid)
        x = x + pos.astype(self.dtype)
        x = Dropout(self.dropout)(x, train=train)

        for index in range(arch.depth):
            rate = self.drop_path * index / (arch.depth - 1) if arch.depth > 1 else self.drop_path
            x = EncoderBlock(arch.num_heads, arch.hidden, self.dropout, self.attention_dropout, rate,
                             self.dtype, name=f"block{index}")(x, train=train)
        x = LayerNorm(epsilon=LN_EPSILON, name="encoder_norm")(x)
        # The patch tokens on their grid `[batch, h/p, w/p, width]`: what a captioner attends over.
        self.sow("intermediates", FEATURE_MAP, x[:, 1:].reshape(batch, *grid, arch.width))
        features = x[:, 0]
        if not self.num_classes:
            return features.astype(jnp.float32)
        head_init = nn.initializers.zeros if self.head_zero_init else nn.initializers.lecun_normal()
        head = dense_def(self.dtype, kernel_init=head_init, bias_init=nn.initializers.zeros)
        return head(self.num_classes, name="head")(features.astype(self.dtype)).astype(jnp.float32)


# name -> its architecture (timm's vit_{tiny,small,base,large}_patch{16,32}_224; torchvision's
# vit_b_16, vit_b_32, vit_l_16). Overridable through the ViT options above.
CONFIGS = {
    "vit_tiny_16": dict(arch=ViTArch(patch_size=16, width=192, depth=12, num_heads=3)),
    "vit_small_16": dict(arch=ViTArch(patch_size=16, width=384, depth=12, num_heads=6)),
    "vit_base_16": dict(arch=ViTArch(patch_size=16, width=768, depth=12, num_heads=12)),
    "vit_base_32": dict(arch=ViTArch(patch_size=32, width=768, depth=12, num_heads=12)),
    "vit_large_16": dict(arch=ViTArch(patch_size=16, width=1024, depth=24, num_heads=16)),
}
