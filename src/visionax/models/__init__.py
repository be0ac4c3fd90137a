"""The CNN zoo of lecture 9 and the Vision Transformers (ViT, `visionax.models.vit`) of lecture 11,
picked by name: `get_model(name, num_classes=1000, **options)`.

Every model is a `flax.linen.Module` applied as `model.apply(variables, images, train=...)` to
images `[batch, height, width, channels]`; BatchNorm models keep their running statistics in
`variables["batch_stats"]` and update them with `mutable=["batch_stats"]` when `train=True`;
dropout models need `rngs={"dropout": key}` when `train=True`. `num_classes=None` (or 0) returns the
pooled feature vector `[batch, features]` instead of logits (ViT: the class token after its final
LayerNorm).

Every model takes `dtype` (computation dtype; parameters stay float32), `conv_impl` (see
`visionax.layers.conv`) and `bn_axis_name` (BatchNorm statistics averaged over that mesh axis; a
no-op for AlexNet, ZFNet, VGG and ViT, which have no BatchNorm; ViT's `conv_impl` is its patch
embedding's); the other options of each family are listed by `model_options(name)` and in the error for a wrong one. Their parameter and MAC counts:
`visionax.models.costs`.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from visionax import registry
from visionax.errors import UserError
from visionax.models import (alexnet, densenet, efficientnet, googlenet, mobilenet, nasnet, resnet,
                             small_cnn, vgg, vit)

# Each family: its Module class and {name: fixed constructor arguments}.
_FAMILIES = (
    (alexnet.ConvNet, alexnet.CONFIGS),
    (vgg.ConvNet, vgg.CONFIGS),
    (googlenet.GoogLeNet, googlenet.CONFIGS),
    (resnet.ResNet, resnet.CONFIGS),
    (densenet.DenseNet, densenet.CONFIGS),
    (mobilenet.MobileNetV1, mobilenet.V1_CONFIGS),
    (mobilenet.MobileNetV2, mobilenet.V2_CONFIGS),
    (efficientnet.EfficientNet, efficientnet.CONFIGS),
    (nasnet.NASNet, nasnet.CONFIGS),
    (small_cnn.SmallCNN, small_cnn.CONFIGS),
    (vit.ViT, vit.CONFIGS),
)

# The image size each model was designed and published at (224 unless listed).
_RESOLUTIONS = {**efficientnet.RESOLUTIONS, **nasnet.RESOLUTIONS}

_REGISTRY: dict[str, tuple[type[nn.Module], dict]] = {
    name: (cls, fixed) for cls, configs in _FAMILIES for name, fixed in configs.items()
}

MODEL_NAMES: list[str] = sorted(_REGISTRY)


def model_options(name: str) -> list[str]:
    """The keyword options `get_model(name, ...)` accepts (besides `num_classes`)."""
    cls, fixed = _lookup(name)
    return sorted(
        field.name for field in dataclasses.fields(cls)
        if field.init and field.name not in ("parent", "name", "num_classes")
        and field.name not in fixed
    )


def input_size(name: str) -> int:
    """The standard (published) input resolution of model `name`: 224 unless it says otherwise."""
    _lookup(name)
    return _RESOLUTIONS.get(name, 224)


def _lookup(name: str):
    return registry.lookup(_REGISTRY, name, "model")


def get_model(name: str, num_classes: int | None = 1000, **options) -> nn.Module:
    """The model called `name` (one of `MODEL_NAMES`) with `num_classes` outputs, or a feature
    extractor when `num_classes` is None or 0. Raises UserError for an unknown name or option."""
    cls, fixed = _lookup(name)
    allowed = model_options(name)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
            f"{', '.join(allowed)} (known models: {', '.join(MODEL_NAMES)})"
        )
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 0):
        raise UserError(f"num_classes must be a positive integer, 0 or None, not {num_classes!r}")
    return cls(num_classes=num_classes, **fixed, **options)


__all__ = ["MODEL_NAMES", "get_model", "input_size", "model_options"]
