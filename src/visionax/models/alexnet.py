"""AlexNet and ZFNet: a stack of convolutions and max-pools followed by three fully connected layers.

- AlexNet — Krizhevsky, Sutskever, Hinton, "ImageNet Classification with Deep Convolutional Neural
  Networks" (NeurIPS 2012). The idea: a deep CNN trained on GPUs with ReLU non-linearities (much
  faster to train than tanh) and dropout in the large fully connected layers (against overfitting).
  Layout and parameter count (61,100,840) are torchvision's single-tower `alexnet` (64, 192, 384,
  256, 256 filters; the paper's two-GPU split and local response normalisation are dropped).
- ZFNet — Zeiler, Fergus, "Visualizing and Understanding Convolutional Networks" (ECCV 2014). The
  idea: AlexNet with better hyperparameters, found by visualising its features: a 7×7 stride-2
  first convolution instead of 11×11 stride 4 (no dead or aliased first-layer filters). Layout of
  the paper's Fig. 3 (96, 256, 384, 384, 256 filters; 62,357,608 parameters at 1000 classes).
  `conv3_5=(512, 1024, 512)` gives the wider variant of the paper's Table 2 that the lecture quotes.

Neither uses BatchNorm, so `variables` has only "params"; `train=True` turns on dropout and needs
`rngs={"dropout": key}`. `width_mult` scales every convolution and hidden layer (small CPU models).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from visionax.layers.regularize import Dropout
from visionax.models.common import (adaptive_avg_pool, classify, conv_def, dense_def, max_pool,
                                    scaled)


class ConvNet(nn.Module):
    """Convolutions (with bias, ReLU) and max-pools from `layers`, an adaptive average pool to
    `pool_size`², then fc6, fc7 (`hidden` units, ReLU, dropout 0.5) and the classifier.

    `layers` holds `("conv", features, kernel, stride, padding)` and `("pool", window, stride,
    padding)`. `dropout_after_relu`: VGG's order (Linear, ReLU, Dropout) instead of AlexNet's
    (Dropout, Linear, ReLU); the parameters are the same. `conv3_5` replaces the filter counts of
    the third to fifth convolutions.
    """

    layers: Sequence[tuple]
    pool_size: int = 6
    hidden: int = 4096
    dropout_after_relu: bool = False
    num_classes: int | None = 1000
    width_mult: float = 1.0
    dropout: float = 0.5
    conv3_5: Sequence[int] | None = None
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None  # no BatchNorm here: accepted so that every model takes it
    conv_impl: str = "xla"

    @nn.compact
    def __call__(self, x, train: bool = False):
        conv = conv_def(self.conv_impl, self.dtype, use_bias=True)
        x = jnp.asarray(x, self.dtype)
        index = 0
        for kind, *spec in self.layers:
            if kind == "conv":
                features, kernel, stride, padding = spec
                index += 1
                if self.conv3_5 is not None and 3 <= index <= 5:
                    features = self.conv3_5[index - 3]
                x = conv(scaled(features, self.width_mult), (kernel, kernel), (stride, stride),
                         padding=((padding, padding),) * 2, name=f"conv{index}")(x)
                x = nn.relu(x)
            else:
                x = max_pool(x, *spec)
        x = adaptive_avg_pool(x, self.pool_size).reshape(x.shape[0], -1)
        hidden = scaled(self.hidden, self.width_mult)
        drop = Dropout(self.dropout)
        if not self.dropout_after_relu:
            x = drop(x, train=train)  # AlexNet drops the pooled features
        x = nn.relu(dense_def(self.dtype)(hidden, name="fc6")(x))
        x = nn.relu(dense_def(self.dtype)(hidden, name="fc7")(drop(x, train=train)))
        # VGG also drops fc7's output before the classifier.
        return classify(x, self.num_classes, self.dtype, train,
                        dropout=self.dropout if self.dropout_after_relu else 0.0)


ALEXNET = (
    ("conv", 64, 11, 4, 2), ("pool", 3, 2),
    ("conv", 192, 5, 1, 2), ("pool", 3, 2),
    ("conv", 384, 3, 1, 1), ("conv", 256, 3, 1, 1), ("conv", 256, 3, 1, 1), ("pool", 3, 2),
)


# ZFNet (paper Fig. 3): 224 -> conv1 7×7/2 -> 110 -> pool -> 55 -> conv2 5×5/2 -> 26 -> pool -> 13
# -> conv3..5 3×3 -> 13 -> pool -> 6.
ZFNET = (
    ("conv", 96, 7, 2, 1), ("pool", 3, 2, 1),
    ("conv", 256, 5, 2, 0), ("pool", 3, 2, 1),
    ("conv", 384, 3, 1, 1), ("conv", 384, 3, 1, 1), ("conv", 256, 3, 1, 1), ("pool", 3, 2),
)


CONFIGS = {
    "alexnet": dict(layers=ALEXNET, pool_size=6, hidden=4096, dropout_after_relu=False),
    "zfnet": dict(layers=ZFNET, pool_size=6, hidden=4096, dropout_after_relu=False),
}
