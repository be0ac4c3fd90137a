"""ResNet and its descendants: Wide ResNet, ResNeXt and SE-ResNet.

- ResNet — He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016).
  The idea: residual connections. Each block learns a correction `F(x)` added to its input,
  `y = relu(F(x) + x)`, so a very deep network can be no worse than a shallower one (the extra
  blocks can learn `F = 0`) and gradients reach early layers through the identity paths.
- Wide ResNet — Zagoruyko, Komodakis, "Wide Residual Networks" (BMVC 2016). The idea: width
  matters more than depth; `wide_resnet50_2` doubles the bottleneck channels of ResNet-50.
- ResNeXt — Xie, Girshick, Dollár, Tu, He, "Aggregated Residual Transformations for Deep Neural
  Networks" (CVPR 2017). The idea: grouped convolutions; the bottleneck's 3×3 convolution is split
  into 32 parallel paths ("cardinality") of 4 channels each.
- SENet — Hu, Shen, Sun, "Squeeze-and-Excitation Networks" (CVPR 2018). The idea: feature
  recalibration; each block pools its output to one vector ("squeeze"), passes it through a small
  bottleneck MLP ending in a sigmoid ("excitation") and rescales its channels by the result.

The layout is torchvision's `resnet.py` (ResNet v1.5: the stride of a bottleneck sits on its 3×3
convolution), so parameter counts match torchvision exactly; SE-ResNet-50 matches timm's
`seresnet50` and Cadene's `se_resnet50` (reduction 16).

Options shared by the family (`get_model("resnet50", cifar_stem=True, width=16, ...)`):
`cifar_stem` (3×3 stride-1 first convolution, no max-pool, for 32×32 images), `stem_stride` (the
CIFAR stem's stride: 2 halves every feature map, a quarter of the compute), `width` (channels of
the first stage, 64 in the paper; stage `i` has `width * 2**i`), `dtype` (computation dtype; params
stay float32), `bn_axis_name` (BatchNorm statistics averaged over this mesh axis: synchronised BN
under `shard_map`/`pmap`), `bn_splits` (training statistics per slice of batch/bn_splits examples:
split BatchNorm, MoCo's shuffle BN on one device), `conv_impl`, `dropout` (on the pooled features
before the head, in training), `drop_path` (stochastic depth, Huang et al. 2016: in training, block
b of the B blocks has its residual branch dropped per example with probability drop_path·b/(B−1),
the survivors scaled by 1/(1 − rate), so y = relu(x + mask·F(x)/(1 − rate)); none in evaluation).
Both need `rngs={"dropout": key}` in training and add no parameters. `num_classes=None` (or 0)
gives the pooled feature vector.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from visionax.errors import UserError
from visionax.layers.regularize import drop_path
from visionax.models.common import (ModuleDef, SqueezeExcite, classify, conv_def, pool_feature_map,
                                    max_pool, norm_def, pad)

SE_REDUCTION = 16  # SENet's hidden size: channels // 16


def _drop_branch(block: nn.Module, branch: jnp.ndarray) -> jnp.ndarray:
    """The residual branch `[N, H, W, C]` of `block`, dropped per example with probability
    `block.drop_rate` in training (stochastic depth), the kept ones scaled by 1/(1 − rate)."""
    if not block.train or block.drop_rate == 0.0:
        return branch
    return drop_path(branch, block.drop_rate, block.make_rng("dropout"))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions plus the shortcut (ResNet-18/34). `groups` and `base_width` are accepted
    for a uniform signature and ignored (torchvision allows only 1 and 64 here)."""

    planes: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef
    groups: int = 1
    base_width: int = 64
    se: bool = False
    dtype: Any = jnp.float32
    drop_rate: float = 0.0  # stochastic depth: the probability of dropping the branch, in training
    train: bool = False

    @nn.compact
    def __call__(self, x):
        residual = x
        y = self.conv(self.planes, (3, 3), (self.stride, self.stride), padding=pad(3),
                      name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(self.planes, (3, 3), padding=pad(3), name="conv2")(y)
        y = self.norm(name="bn2")(y)
        if self.se:
            y = SqueezeExcite(max(1, y.shape[-1] // SE_REDUCTION), dtype=self.dtype, name="se")(y)
        if residual.shape != y.shape:
            residual = self.conv(self.planes, (1, 1), (self.stride, self.stride),
                                 name="downsample_conv")(x)
            residual = self.norm(name="downsample_bn")(residual)
        return nn.relu(_drop_branch(self, y) + residual)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, optionally grouped), 1×1 expand ×4, plus the shortcut (ResNet-50+)."""

    planes: int
    stride: int
    conv: ModuleDef
    norm: ModuleDef
    groups: int = 1
    base_width: int = 64
    se: bool = False
    dtype: Any = jnp.float32
    drop_rate: float = 0.0  # stochastic depth: the probability of dropping the branch, in training
    train: bool = False

    @nn.compact
    def __call__(self, x):
        residual = x
        inner = int(self.planes * (self.base_width / 64.0)) * self.groups
        out = self.planes * 4  # the expansion of a bottleneck
        y = self.conv(inner, (1, 1), name="conv1")(x)
        y = nn.relu(self.norm(name="bn1")(y))
        y = self.conv(inner, (3, 3), (self.stride, self.stride), padding=pad(3),
                      feature_group_count=self.groups, name="conv2")(y)
        y = nn.relu(self.norm(name="bn2")(y))
        y = self.conv(out, (1, 1), name="conv3")(y)
        y = self.norm(name="bn3")(y)
        if self.se:
            y = SqueezeExcite(max(1, y.shape[-1] // SE_REDUCTION), dtype=self.dtype, name="se")(y)
        if residual.shape != y.shape:
            residual = self.conv(out, (1, 1), (self.stride, self.stride),
                                 name="downsample_conv")(x)
            residual = self.norm(name="downsample_bn")(residual)
        return nn.relu(_drop_branch(self, y) + residual)


class ResNet(nn.Module):
    """ResNet v1.5 (torchvision layout). `block` is "basic" or "bottleneck"."""

    stage_sizes: Sequence[int]
    block: str = "bottleneck"
    groups: int = 1
    base_width: int = 64
    se: bool = False
    num_classes: int | None = 1000
    width: int = 64
    cifar_stem: bool = False
    stem_stride: int = 1
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    bn_splits: int = 1
    conv_impl: str = "xla"
    dropout: float = 0.0
    drop_path: float = 0.0

    def __post_init__(self):
        for name in ("dropout", "drop_path"):
            rate = getattr(self, name)
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
                raise UserError(f"{name} must be a probability in [0, 1), not {rate!r}")
        if not isinstance(self.bn_splits, int) or self.bn_splits < 1:
            raise UserError(f"bn_splits must be a positive integer, not {self.bn_splits!r}")
        if self.bn_splits > 1 and self.bn_axis_name is not None:
            raise UserError("bn_splits > 1 (BatchNorm per slice of the batch) cannot be combined with "
                            "synchronised BatchNorm (bn_axis_name); use one of them")
        if self.stem_stride not in (1, 2):
            raise UserError(f"stem_stride must be 1 or 2, not {self.stem_stride!r}")
        if self.stem_stride != 1 and not self.cifar_stem:
            raise UserError("stem_stride applies only to the CIFAR stem; set cifar_stem=True, or "
                            "leave stem_stride at 1 (the ImageNet stem always has stride 2)")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype)
        norm = norm_def(train, self.dtype, self.bn_axis_name, self.bn_splits)
        block_cls = {"basic": BasicBlock, "bottleneck": Bottleneck}[self.block]
        x = jnp.asarray(x, self.dtype)
        kernel, stride = (3, self.stem_stride) if self.cifar_stem else (7, 2)
        x = conv(self.width, (kernel, kernel), (stride, stride), padding=pad(kernel), name="conv1")(x)
        x = nn.relu(norm(name="bn1")(x))
        if not self.cifar_stem:
            x = max_pool(x, 3, 2, padding=1)
        total, block_index = sum(self.stage_sizes), 0
        for stage, blocks in enumerate(self.stage_sizes):
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                rate = self.drop_path * block_index / (total - 1) if total > 1 else self.drop_path
                x = block_cls(self.width * 2**stage, stride, conv=conv, norm=norm,
                              groups=self.groups, base_width=self.base_width, se=self.se,
                              dtype=self.dtype, drop_rate=rate, train=train,
                              name=f"layer{stage + 1}_{index}")(x)
                block_index += 1
        return classify(pool_feature_map(self, x), self.num_classes, self.dtype, train, dropout=self.dropout)


def _arch(stage_sizes, block="bottleneck", groups=1, base_width=64, se=False) -> dict:
    return dict(stage_sizes=stage_sizes, block=block, groups=groups, base_width=base_width, se=se)


# name -> its architecture (torchvision's constructors; SE-ResNet-50 from timm/Cadene). What is fixed
# here is not an option of `get_model`.
CONFIGS = {
    "resnet18": _arch((2, 2, 2, 2), block="basic"),
    "resnet34": _arch((3, 4, 6, 3), block="basic"),
    "resnet50": _arch((3, 4, 6, 3)),
    "resnet101": _arch((3, 4, 23, 3)),
    "resnet152": _arch((3, 8, 36, 3)),
    "wide_resnet50_2": _arch((3, 4, 6, 3), base_width=128),
    "resnext50_32x4d": _arch((3, 4, 6, 3), groups=32, base_width=4),
    "se_resnet50": _arch((3, 4, 6, 3), se=True),
}
