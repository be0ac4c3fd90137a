"""The model zoo as a whole: names, exact parameter counts, MACs, the encoder mode, options, errors.

Also holds the float64 NumPy references (convolution, BatchNorm, pooling) and the fast random
variables that the per-family tests (test_models_*.py) import.
"""

import functools
import importlib
import math

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from bench import model_costs
from bench.model_costs import param_count
from visionax.errors import UserError
from visionax.layers import conv as conv_layers
from visionax.models import MODEL_NAMES, get_model, input_size, model_options

# ---------------------------------------------------------------------------------------------------
# NumPy references (NHWC activations, HWIO kernels, PyTorch padding semantics) and test variables.


def conv2d_ref(x, kernel, stride=1, padding=0, groups=1, bias=None):
    """float64 convolution; `padding` is an int (symmetric) or ((top, bottom), (left, right))."""
    x = np.asarray(x, np.float64)
    kernel = np.asarray(kernel, np.float64)
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    x = np.pad(x, ((0, 0), *padding, (0, 0)))
    kh, kw, cin_g, cout = kernel.shape
    out_h = (x.shape[1] - kh) // stride + 1
    out_w = (x.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], out_h, out_w, cout))
    cout_g = cout // groups
    for g in range(groups):
        xs = x[..., g * cin_g:(g + 1) * cin_g]
        ks = kernel[..., g * cout_g:(g + 1) * cout_g]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
                out[..., g * cout_g:(g + 1) * cout_g] += patch @ ks[i, j]
    if bias is not None:
        out += np.asarray(bias, np.float64)
    return out


def bn_ref(x, stats, params, eps=1e-5):
    """BatchNorm in inference mode with running statistics `stats` and affine `params`."""
    return ((x - np.asarray(stats["mean"])) / np.sqrt(np.asarray(stats["var"]) + eps)
            * np.asarray(params["scale"]) + np.asarray(params["bias"]))


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


def random_variables(model, x, seed=0, **apply_kwargs):
    """Variables with the model's structure, filled from NumPy (fast: no per-shape JAX init).

    Kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.1²), BN scales ~ U(0.5, 1.5), running means ~ N(0, 0.1²),
    running variances ~ U(0.5, 1.5): every parameter matters in a forward-value test."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(functools.partial(model.init, **apply_kwargs), jax.random.key(0), x)

    def fill(path, leaf):
        name = getattr(path[-1], "key", "")
        shape = leaf.shape
        if name == "kernel":
            value = rng.normal(0, 1 / math.sqrt(math.prod(shape[:-1])), shape)
        elif name in ("scale", "var"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name == "mean":
            value = rng.normal(0, 0.1, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        return jnp.asarray(value, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


# ---------------------------------------------------------------------------------------------------
# Names and parameter counts.

# Trainable parameters at 1000 classes and where each number comes from. torchvision: the
# `num_params` of its weight tables (torchvision.models, v0.13+).
REFERENCE_PARAMS = {
    "alexnet": (61_100_840, "torchvision alexnet"),
    "zfnet": (62_357_608, "Zeiler & Fergus 2014, Fig. 3, counted layer by layer (see test below)"),
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
}


def test_every_lecture_architecture_is_registered():
    assert set(REFERENCE_PARAMS) <= set(MODEL_NAMES)
    assert MODEL_NAMES == sorted(MODEL_NAMES)


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_parameter_count_equals_reference(name):
    assert param_count(name) == REFERENCE_PARAMS[name][0], REFERENCE_PARAMS[name][1]


def test_zfnet_count_is_the_papers_layer_table():
    # Fig. 3: conv 7×7×3→96, 5×5×96→256, 3×3×256→384, 3×3×384→384, 3×3×384→256 (with biases),
    # fc 6·6·256→4096→4096→1000.
    layers = [(7 * 7 * 3, 96), (5 * 5 * 96, 256), (9 * 256, 384), (9 * 384, 384), (9 * 384, 256),
              (6 * 6 * 256, 4096), (4096, 4096), (4096, 1000)]
    assert sum((fan_in + 1) * out for fan_in, out in layers) == REFERENCE_PARAMS["zfnet"][0]
    # The lecture's wider variant (conv3..5 = 512, 1024, 512; the paper's Table 2).
    wide = layers[:2] + [(9 * 256, 512), (9 * 512, 1024), (9 * 1024, 512), (6 * 6 * 512, 4096)] + layers[6:]
    assert param_count("zfnet", conv3_5=(512, 1024, 512)) == sum((f + 1) * o for f, o in wide)


def test_num_classes_changes_only_the_classifier():
    for name, features in (("googlenet", 1024), ("efficientnet_b0", 1280), ("vgg16", 4096)):
        assert param_count(name) - param_count(name, num_classes=10) == 990 * (features + 1)
        assert param_count(name) - param_count(name, num_classes=None) == 1000 * (features + 1)


# ---------------------------------------------------------------------------------------------------
# MACs: counted from the jaxpr, equal to torchvision's published `_ops` (conv + linear MACs).

@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "resnet50", "resnext50_32x4d",
                                  "densenet121", "mobilenet_v2", "efficientnet_b0"])
def test_macs_equal_torchvision(name):
    published, source = model_costs.PUBLISHED[name]
    assert source == "torchvision"
    assert round(model_costs.forward_macs(name) / 1e9, 3) == pytest.approx(published, abs=1e-3)


def test_efficientnet_b2_macs_at_torchvision_crop():
    # torchvision reports B2 at its 288×288 evaluation crop; at the paper's 260 it is ~1.0 GMACs.
    assert round(model_costs.forward_macs("efficientnet_b2", resolution=288) / 1e9, 3) == 1.088
    assert round(model_costs.forward_macs("efficientnet_b2") / 1e9, 1) == 1.0


def test_mac_counter_on_hand_computed_layers():
    def macs(f, *shapes):
        args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
        return model_costs.jaxpr_macs(jax.make_jaxpr(f)(*args).jaxpr)

    nhwc = ("NHWC", "HWIO", "NHWC")
    # AlexNet's first convolution: 55·55 outputs × 64 filters × 11·11·3 taps.
    conv1 = lambda x, k: jax.lax.conv_general_dilated(x, k, (4, 4), ((2, 2), (2, 2)),
                                                      dimension_numbers=nhwc)
    assert macs(conv1, (1, 224, 224, 3), (11, 11, 3, 64)) == 55 * 55 * 64 * 11 * 11 * 3
    # A grouped convolution: each output sees only its group's 2 input channels.
    grouped = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=nhwc,
                                                        feature_group_count=4)
    assert macs(grouped, (2, 5, 5, 8), (3, 3, 2, 12)) == 2 * 5 * 5 * 12 * 3 * 3 * 2
    # A matrix product inside a nested jit: m·k·n.
    assert macs(jax.jit(jnp.dot), (3, 4096), (4096, 1000)) == 3 * 4096 * 1000


def test_lecture_comparison_holds():
    # VGG: the most parameters and operations of the 2012-2015 networks; GoogLeNet far fewer of both;
    # AlexNet cheap in operations but heavy in parameters; ResNet-50 between.
    macs = {n: model_costs.forward_macs(n) for n in ("alexnet", "vgg16", "googlenet", "resnet50")}
    params = {n: param_count(n) for n in macs}
    assert max(macs, key=macs.get) == max(params, key=params.get) == "vgg16"
    assert params["googlenet"] < params["resnet50"] < params["alexnet"]
    assert macs["alexnet"] < macs["googlenet"] < macs["resnet50"] < macs["vgg16"]


# ---------------------------------------------------------------------------------------------------
# Contracts shared by every model.

@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMS))
def test_every_model_is_an_encoder_and_takes_the_shared_options(name):
    assert {"dtype", "conv_impl", "bn_axis_name"} <= set(model_options(name))
    size = input_size(name)
    images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    model = get_model(name, num_classes=None, dtype=jnp.bfloat16)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    assert "head" not in variables["params"]
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    features = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
    assert features.ndim == 2 and features.shape[0] == 2 and features.dtype == jnp.float32


def _count_convs(jaxpr) -> int:
    count = 0
    for eqn in jaxpr.eqns:
        count += eqn.primitive.name == "conv_general_dilated"
        for value in eqn.params.values():
            for item in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(item, "jaxpr", item)
                if hasattr(inner, "eqns"):
                    count += _count_convs(inner)
    return count


@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "resnext50_32x4d", "se_resnet50",
                                  "densenet121", "mobilenet_v1", "mobilenet_v2", "efficientnet_b0",
                                  "nasnet_a_large"])
def test_every_convolution_uses_the_chosen_conv_impl(name, monkeypatch):
    calls = []

    def conv_for(impl):
        def conv(*args, **kwargs):
            calls.append(impl)
            return jax.lax.conv_general_dilated(*args, **kwargs)
        return conv

    monkeypatch.setattr(conv_layers, "conv_general_dilated_for", conv_for)
    model = get_model(name, conv_impl="gemm")
    images = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    calls.clear()
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(variables, images).jaxpr
    assert calls == ["gemm"] * _count_convs(jaxpr) and calls


def test_standard_resolutions():
    assert input_size("resnet50") == 224 and input_size("nasnet_a_large") == 331
    assert [input_size(f"efficientnet_b{i}") for i in range(8)] == [224, 240, 260, 300, 380, 456, 528, 600]


def test_errors_name_the_known_models_and_options():
    with pytest.raises(UserError) as error:
        get_model("inception_v9")
    assert all(name in str(error.value) for name in MODEL_NAMES)
    with pytest.raises(UserError, match="width_mult"):
        get_model("vgg16", widthmult=0.5)
    with pytest.raises(UserError):
        get_model("vgg16", layers=())  # fixed by the name
    with pytest.raises(UserError):
        get_model("vgg16", num_classes=-1)
    with pytest.raises(UserError):
        input_size("vgg17")


FAMILY_MODULES = ["alexnet", "vgg", "googlenet", "resnet", "densenet", "mobilenet", "efficientnet",
                  "nasnet"]


@pytest.mark.parametrize("module", FAMILY_MODULES)
def test_each_family_docstring_names_its_paper_and_idea(module):
    doc = importlib.import_module(f"visionax.models.{module}").__doc__
    assert "The idea" in doc and any(str(year) in doc for year in range(2012, 2020))
