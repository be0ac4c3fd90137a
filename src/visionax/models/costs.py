"""What a model of the zoo costs: trainable parameters and multiply-accumulates per image.

Nothing is allocated or run. `param_count` counts the "params" collection under `jax.eval_shape`;
`forward_macs` traces one inference forward pass on abstract inputs (`jax.make_jaxpr`) and
`jaxpr_macs` adds up every convolution and matrix product in it, recursing into nested calls:
`output elements × kernel elements per output`, what torchvision, fvcore and the papers count
(BatchNorm, activations and pooling are left out). `xla_macs` is half of XLA's own FLOP estimate of
the lowered (not compiled) forward pass: it also counts element-wise work but skips the taps of a
convolution that fall on padding, so it lands a few percent either side.

`PUBLISHED` holds the published GMACs of each model at its standard resolution and their source,
`PARAMS_SOURCE` where a parameter count other than torchvision's comes from (the README's table,
printed by `python -m bench.model_costs`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from visionax.models import get_model, input_size

__all__ = ["PUBLISHED", "PARAMS_SOURCE", "param_count", "parameter_total", "jaxpr_macs", "forward_macs", "xla_macs"]

# Published GMACs per image at the standard resolution, and where they come from.
PUBLISHED = {
    "alexnet": (0.714, "torchvision"),
    "zfnet": (None, "paper Fig. 3 (no count given)"),
    "vgg16": (15.47, "torchvision"),
    "vgg19": (19.632, "torchvision"),
    "googlenet": (1.498, "torchvision"),
    "resnet18": (1.814, "torchvision"),
    "resnet34": (3.664, "torchvision"),
    "resnet50": (4.089, "torchvision"),
    "resnet101": (7.801, "torchvision"),
    "resnet152": (11.514, "torchvision"),
    "wide_resnet50_2": (11.398, "torchvision"),
    "resnext50_32x4d": (4.23, "torchvision"),
    "se_resnet50": (3.87, "SENet paper Table 2 (stride on the 1×1 conv)"),
    "densenet121": (2.834, "torchvision"),
    "mobilenet_v1": (0.569, "MobileNet paper Table 8"),
    "mobilenet_v2": (0.301, "torchvision"),
    "efficientnet_b0": (0.386, "torchvision"),
    "efficientnet_b1": (0.687, "torchvision"),
    "efficientnet_b2": (1.0, "EfficientNet paper Table 2 (torchvision's 1.088 is at its 288 crop)"),
    "efficientnet_b3": (1.827, "torchvision"),
    "efficientnet_b4": (4.394, "torchvision"),
    "efficientnet_b5": (10.266, "torchvision"),
    "efficientnet_b6": (19.068, "torchvision"),
    "efficientnet_b7": (37.746, "torchvision"),
    "nasnet_a_large": (23.8, "NASNet paper Table 2"),
    "vit_tiny_16": (None, "timm (no torchvision model; no count published with the weights)"),
    "vit_small_16": (None, "timm (no torchvision model; no count published with the weights)"),
    "vit_base_16": (17.564, "torchvision"),
    "vit_base_32": (4.409, "torchvision"),
    "vit_large_16": (61.555, "torchvision"),
}

# Where each parameter count the tests check comes from.
PARAMS_SOURCE = {
    "zfnet": "paper Fig. 3", "se_resnet50": "timm / Cadene", "mobilenet_v1": "timm / Keras",
    "nasnet_a_large": "Cadene / Keras", "small_cnn": "this project",
    "vit_tiny_16": "timm", "vit_small_16": "timm",
}


def _abstract(name: str, resolution: int | None = None, **options):
    model = get_model(name, **options)
    size = resolution or input_size(name)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    return model, variables, images


def parameter_total(params) -> int:
    """The number of values in a tree of parameters (arrays or shape-dtype structures)."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def param_count(name: str, **options) -> int:
    """Trainable parameters (the "params" collection), counted without allocating them."""
    _, variables, _ = _abstract(name, **options)
    return parameter_total(variables["params"])


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, jex_core.ClosedJaxpr):
                yield item.jaxpr
            elif isinstance(item, jex_core.Jaxpr):
                yield item


def jaxpr_macs(jaxpr) -> int:
    """Multiply-accumulates of every convolution and dot product in `jaxpr` (recursing into calls)."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            kernel = eqn.invars[1].aval.shape
            out_features = kernel[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(kernel) // out_features
        elif name == "dot_general":
            (contracting, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in contracting)
        for sub in _sub_jaxprs(eqn):
            total += jaxpr_macs(sub)
    return total


def forward_macs(name: str, resolution: int | None = None, **options) -> int:
    """MACs of one forward pass (inference mode) of one image, at the model's standard resolution
    unless `resolution` is given."""
    model, variables, images = _abstract(name, resolution, **options)
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images)
    return jaxpr_macs(closed.jaxpr)


def xla_macs(name: str, **options) -> float:
    """Half of XLA's FLOP estimate of the lowered forward pass (includes element-wise work)."""
    model, variables, images = _abstract(name, **options)
    lowered = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, images)
    analysis = lowered.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per device
        analysis = analysis[0]
    return analysis["flops"] / 2
