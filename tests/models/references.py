"""Shared by the model tests: float64 NumPy building blocks written from the layers' definitions
(NHWC activations, HWIO kernels, PyTorch padding semantics), fast random variables, the reference
parameter counts, and a comparison that also checks the output depends on its input.

The whole-model NumPy references live in each family's test file and are built from these blocks;
none of them calls the code under test.
"""

from __future__ import annotations

import contextlib
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from visionax.models import get_model, input_size

# Trainable parameters at 1000 classes and where each number comes from. torchvision: the
# `num_params` of its weight tables (torchvision.models, v0.13+).
REFERENCE_PARAMS = {
    "alexnet": (61_100_840, "torchvision alexnet"),
    "zfnet": (62_357_608, "Zeiler & Fergus 2014, Fig. 3, counted layer by layer (see test_costs.py)"),
    "vgg16": (138_357_544, "torchvision vgg16"),
    "vgg19": (143_667_240, "torchvision vgg19"),
    "googlenet": (6_624_904, "torchvision googlenet (aux_logits=False)"),
    "resnet18": (11_689_512, "torchvision resnet18"),
    "resnet34": (21_797_672, "torchvision resnet34"),
    "resnet50": (25_557_032, "torchvision resnet50"),
    "resnet101": (44_549_160, "torchvision resnet101"),
    "resnet152": (60_192_808, "torchvision resnet152"),
    "wide_resnet50_2": (68_883_240, "torchvision wide_resnet50_2"),
    "resnext50_32x4d": (25_028_904, "torchvision resnext50_32x4d"),
    "se_resnet50": (28_088_024, "timm seresnet50 / Cadene pretrainedmodels se_resnet50"),
    "densenet121": (7_978_856, "torchvision densenet121"),
    "mobilenet_v1": (4_231_976, "timm mobilenetv1_100 / Keras MobileNet(alpha=1) trainable params"),
    "mobilenet_v2": (3_504_872, "torchvision mobilenet_v2"),
    "efficientnet_b0": (5_288_548, "torchvision efficientnet_b0"),
    "efficientnet_b1": (7_794_184, "torchvision efficientnet_b1"),
    "efficientnet_b2": (9_109_994, "torchvision efficientnet_b2"),
    "efficientnet_b3": (12_233_232, "torchvision efficientnet_b3"),
    "efficientnet_b4": (19_341_616, "torchvision efficientnet_b4"),
    "efficientnet_b5": (30_389_784, "torchvision efficientnet_b5"),
    "efficientnet_b6": (43_040_704, "torchvision efficientnet_b6"),
    "efficientnet_b7": (66_347_960, "torchvision efficientnet_b7"),
    "nasnet_a_large": (88_753_150, "Cadene pretrainedmodels nasnetalarge / Keras NASNetLarge trainable"),
    "vit_tiny_16": (5_717_416, "timm vit_tiny_patch16_224"),
    "vit_small_16": (22_050_664, "timm vit_small_patch16_224"),
    "vit_base_16": (86_567_656, "torchvision vit_b_16 / timm vit_base_patch16_224"),
    "vit_base_32": (88_224_232, "torchvision vit_b_32 / timm vit_base_patch32_224"),
    "vit_large_16": (304_326_632, "torchvision vit_l_16 / timm vit_large_patch16_224"),
}

# ---------------------------------------------------------------------------------------------------
# Element-wise functions.


def relu(x):
    return np.maximum(x, 0)


def relu6(x):
    return np.clip(x, 0, 6)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def silu(x):
    return x * sigmoid(x)


# ---------------------------------------------------------------------------------------------------
# Layers.


def conv2d_ref(x, kernel, stride=1, padding=0, groups=1, bias=None):
    """float64 convolution, tap by tap; `padding` is an int (symmetric) or ((top, bottom), (left, right)).

    `groups` splits the input channels and the filters into that many equal consecutive groups
    (kernel `[kh, kw, c_in / groups, c_out]`; a depthwise convolution has groups = c_in)."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    x = np.pad(x, ((0, 0), *padding, (0, 0)))
    kh, kw, cin_g, cout = kernel.shape
    assert x.shape[-1] == cin_g * groups, (x.shape, kernel.shape, groups)
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    xg = x.reshape(*x.shape[:3], groups, cin_g)                       # [n, h, w, g, c]
    kg = kernel.reshape(kh, kw, cin_g, groups, cout // groups)        # [kh, kw, c, g, o]
    out = np.zeros((x.shape[0], out_h, out_w, groups, cout // groups))
    for i in range(kh):
        for j in range(kw):
            patch = xg[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride]
            out += np.einsum("nhwgc,cgo->nhwgo", patch, kg[i, j])
    out = out.reshape(*out.shape[:3], cout)
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def bn_ref(x, stats, params, eps=1e-5):
    """BatchNorm in inference mode with running statistics `stats` and affine `params`."""
    return ((x - np.asarray(stats["mean"], np.float64)) / np.sqrt(np.asarray(stats["var"], np.float64) + eps)
            * np.asarray(params["scale"], np.float64) + np.asarray(params["bias"], np.float64))


def dense_ref(x, params):
    return np.asarray(x, np.float64) @ np.asarray(params["kernel"], np.float64) + np.asarray(params["bias"], np.float64)


def pool_ref(x, window, stride, padding=0, kind="max", ceil_mode=False, count_include_pad=True):
    """PyTorch's MaxPool2d / AvgPool2d, written out window by window."""
    x = np.asarray(x, np.float64)
    batch, height, width, channels = x.shape

    def out_size(size):
        span = size + 2 * padding - window
        n = (-(-span // stride) if ceil_mode else span // stride) + 1
        return n - 1 if ceil_mode and (n - 1) * stride >= size + padding else n

    out = np.zeros((batch, out_size(height), out_size(width), channels))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            r0, c0 = i * stride - padding, j * stride - padding
            rows = slice(max(r0, 0), min(r0 + window, height))
            cols = slice(max(c0, 0), min(c0 + window, width))
            patch = x[:, rows, cols]
            if kind == "max":
                out[:, i, j] = patch.max(axis=(1, 2))
            else:
                if count_include_pad:  # the padding counts, not what ceil mode adds beyond it
                    count = ((min(r0 + window, height + padding) - r0)
                             * (min(c0 + window, width + padding) - c0))
                else:
                    count = (rows.stop - rows.start) * (cols.stop - cols.start)
                out[:, i, j] = patch.sum(axis=(1, 2)) / count
    return out


def adaptive_avg_pool_ref(x, size):
    """PyTorch's AdaptiveAvgPool2d(size): output cell (i, j) averages rows ⌊iH/size⌋ … ⌈(i+1)H/size⌉ − 1
    (and the same for columns)."""
    x = np.asarray(x, np.float64)
    height, width = x.shape[1:3]
    out = np.zeros((x.shape[0], size, size, x.shape[3]))
    for i in range(size):
        for j in range(size):
            rows = slice(i * height // size, math.ceil((i + 1) * height / size))
            cols = slice(j * width // size, math.ceil((j + 1) * width / size))
            out[:, i, j] = x[:, rows, cols].mean(axis=(1, 2))
    return out


def global_avg_pool_ref(x):
    return np.asarray(x, np.float64).mean(axis=(1, 2))


def sub(variables, name):
    """The variables of submodule `name`: {"params": ..., "batch_stats": ...} (the collections it has)."""
    return {c: variables[c][name] for c in variables if name in variables[c]}


def conv_bn_ref(x, variables, stride=1, padding=0, groups=1, act=relu):
    """`common.ConvBNAct` in NumPy from its variables {"params": {conv, bn}, "batch_stats": {bn}}."""
    p, s = variables["params"], variables["batch_stats"]
    y = bn_ref(conv2d_ref(x, p["conv"]["kernel"], stride, padding, groups), s["bn"], p["bn"])
    return act(y) if act else y


def squeeze_excite_ref(x, params, act=relu):
    """SENet's gate x · sigmoid(W2 act(W1 mean_hw(x) + b1) + b2) from the params {fc1, fc2}."""
    hidden = act(dense_ref(x.mean(axis=(1, 2)), params["fc1"]))
    return x * sigmoid(dense_ref(hidden, params["fc2"]))[:, None, None, :]


# ---------------------------------------------------------------------------------------------------
# Variables and comparisons.


def random_variables(model, x, seed=0, gain=1.0, **apply_kwargs):
    """Variables with the model's structure, filled from NumPy (fast: no per-shape JAX init).

    Kernels ~ N(0, gain/fan_in) (gain 2 keeps ReLU activations from shrinking in a network without
    BatchNorm), biases ~ N(0, 0.1²), BN scales ~ U(0.5, 1.5), running means ~ N(0, 0.1²), running
    variances ~ U(0.5, 1.5): every parameter matters in a forward-value test."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(functools.partial(model.init, **apply_kwargs), jax.random.key(0), x)

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        shape = leaf.shape
        if name == "kernel":
            value = rng.normal(0, math.sqrt(gain / math.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "mean":
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def random_images(batch, size, seed=0, channels=3):
    return np.random.default_rng(seed).normal(size=(batch, size, size, channels)).astype(np.float32)


def assert_forward_close(got, want, rtol=1e-4):
    """`got` (float32) equals the float64 `want` to `rtol` relative to the largest entry of `want`,
    and `want` is not a near-constant: its examples differ by far more than that tolerance (a
    reference that ignored the input, or a network that lost it, could not pass by accident)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = np.abs(want).max()
    assert np.isfinite(scale) and scale > 0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)
    assert np.abs(want[0] - want[1]).max() > 100 * rtol * scale, "the output barely depends on the input"


def shapes_at_full_size(name, *paths):
    """Output shapes of the named submodules at the model's standard resolution, without computing."""
    model = get_model(name)
    size = input_size(name)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    _, state = jax.eval_shape(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                                       mutable=["intermediates"]), variables, images)
    return [state["intermediates"][path]["__call__"][0].shape for path in paths]


@contextlib.contextmanager
def recording_modules():
    """A context that lists the class of every submodule call made inside it (traced or not)."""
    used = []

    def record(f, args, kwargs, context):
        used.append(type(context.module))
        return f(*args, **kwargs)

    with nn.intercept_methods(record):
        yield used


def modules_used(model, variables, x, **apply_kwargs) -> list[type]:
    """The class of every submodule call in `model.apply(variables, x, **apply_kwargs)`, traced under
    `jax.eval_shape` (nothing is computed; `variables` may be abstract)."""
    with recording_modules() as used:
        jax.eval_shape(lambda v, x: model.apply(v, x, **apply_kwargs), variables, x)
    return used
