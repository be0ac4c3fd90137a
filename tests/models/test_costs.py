"""visionax.models.costs: exact parameter counts of every model, MACs from the jaxpr against torchvision's
published figures and hand-computed layers."""

import jax
import jax.numpy as jnp
import pytest

from visionax.models import MODEL_NAMES, costs
from visionax.models.costs import param_count

from tests.models.references import REFERENCE_PARAMS


pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


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


def test_tables_cover_the_zoo():
    assert set(costs.PUBLISHED) == set(REFERENCE_PARAMS)
    assert set(costs.PARAMS_SOURCE) <= set(MODEL_NAMES)


# ---------------------------------------------------------------------------------------------------
# MACs: counted from the jaxpr, equal to torchvision's published `_ops` (conv + linear MACs).

@pytest.mark.parametrize("name", ["alexnet", "vgg16", "googlenet", "resnet50", "resnext50_32x4d",
                                  "densenet121", "mobilenet_v2", "efficientnet_b0", "vit_base_16",
                                  "vit_base_32", "vit_large_16"])
def test_macs_equal_torchvision(name):
    published, source = costs.PUBLISHED[name]
    assert source == "torchvision"
    assert round(costs.forward_macs(name) / 1e9, 3) == pytest.approx(published, abs=1e-3)


def test_efficientnet_b2_macs_at_torchvision_crop():
    # torchvision reports B2 at its 288×288 evaluation crop; at the paper's 260 it is ~1.0 GMACs.
    assert round(costs.forward_macs("efficientnet_b2", resolution=288) / 1e9, 3) == 1.088
    assert round(costs.forward_macs("efficientnet_b2") / 1e9, 1) == 1.0


def test_mac_counter_on_hand_computed_layers():
    def macs(f, *shapes):
        args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
        return costs.jaxpr_macs(jax.make_jaxpr(f)(*args).jaxpr)

    nhwc = ("NHWC", "HWIO", "NHWC")
    # AlexNet's first convolution: 55·55 outputs × 64 filters × 11·11·3 taps.
    conv1 = lambda x, k: jax.lax.conv_general_dilated(x, k, (4, 4), ((2, 2), (2, 2)),  # noqa: E731
                                                      dimension_numbers=nhwc)
    assert macs(conv1, (1, 224, 224, 3), (11, 11, 3, 64)) == 55 * 55 * 64 * 11 * 11 * 3
    # A grouped convolution: each output sees only its group's 2 input channels.
    grouped = lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=nhwc,  # noqa: E731
                                                        feature_group_count=4)
    assert macs(grouped, (2, 5, 5, 8), (3, 3, 2, 12)) == 2 * 5 * 5 * 12 * 3 * 3 * 2
    # A matrix product inside a nested jit: m·k·n.
    assert macs(jax.jit(jnp.dot), (3, 4096), (4096, 1000)) == 3 * 4096 * 1000


def test_xla_estimate_is_near_the_counted_macs():
    # AlexNet: XLA skips the taps on padding (0.659 vs 0.714 GMACs in the README's table).
    counted, xla = costs.forward_macs("alexnet"), costs.xla_macs("alexnet")
    assert 0.85 * counted < xla < counted


def test_lecture_comparison_holds():
    # VGG: the most parameters and operations of the 2012-2015 networks; GoogLeNet far fewer of both;
    # AlexNet cheap in operations but heavy in parameters; ResNet-50 between.
    macs = {n: costs.forward_macs(n) for n in ("alexnet", "vgg16", "googlenet", "resnet50")}
    params = {n: param_count(n) for n in macs}
    assert max(macs, key=macs.get) == max(params, key=params.get) == "vgg16"
    assert params["googlenet"] < params["resnet50"] < params["alexnet"]
    assert macs["alexnet"] < macs["googlenet"] < macs["resnet50"] < macs["vgg16"]
