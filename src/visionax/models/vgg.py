"""VGG — Simonyan, Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition"
(ICLR 2015).

The idea: depth from small filters. Only 3×3 convolutions (stride 1, padding 1) stacked in blocks and
2×2 max-pools: two stacked 3×3 convolutions see a 5×5 region and three see 7×7, with fewer parameters
(3·3²C² = 27C² instead of 7²C² = 49C²) and more non-linearities than one large filter. Each pool
halves the resolution and the next block doubles the channels. VGG-16 is configuration D and VGG-19
configuration E of the paper; layout and parameter counts (138,357,544 and 143,667,240) are
torchvision's `vgg16` and `vgg19` (no BatchNorm, classifier Linear–ReLU–Dropout ×2, Linear).

Built on AlexNet's `ConvNet` (convolutions, then three fully connected layers); `width_mult` scales
every layer for small CPU models, and `train=True` needs `rngs={"dropout": key}`.
"""

from __future__ import annotations

from visionax.models.alexnet import ConvNet

__all__ = ["CONFIGS", "ConvNet", "vgg_layers"]


def vgg_layers(blocks: tuple[tuple[int, int], ...]) -> tuple:
    """`(convolutions, channels)` per block -> ConvNet layers: 3×3 convolutions, then a 2×2 max-pool."""
    layers = []
    for repeats, channels in blocks:
        layers += [("conv", channels, 3, 1, 1)] * repeats + [("pool", 2, 2)]
    return tuple(layers)


_VGG = dict(pool_size=7, hidden=4096, dropout_after_relu=True, conv3_5=None)
CONFIGS = {
    "vgg16": dict(layers=vgg_layers(((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))), **_VGG),
    "vgg19": dict(layers=vgg_layers(((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))), **_VGG),
}
