"""A convolution computed pass by pass (`conv_general_dilated_by_passes`): every mix of XLA, gemm
and Winograd for the forward pass, the input gradient and the kernel gradient equals
lax.conv_general_dilated within 1e-5, and each pass runs on the implementation asked for."""

import pytest

from tests.layers.conv.cases import DN, case, check, count, inputs, traced
from visionax.errors import UserError
from visionax.layers.conv import conv_general_dilated_by_passes

MIXES = [("xla", "xla", "gemm"), ("gemm", "xla", "xla"), ("xla", "gemm", "xla"),
         ("winograd", "xla", "gemm"), ("gemm", "winograd", "winograd")]


@pytest.mark.parametrize("passes", MIXES)
@pytest.mark.parametrize("name", ["same_s2_odd", "groups2", "lhs_dilation", "same_s1"])
def test_mixed_passes(passes, name):
    _, spatial, kernel, cin, cout, kw = case(name)
    x, w, rng = inputs(8, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    conv = conv_general_dilated_by_passes(passes)
    check(conv, x, w, rng, dimension_numbers=DN, **kw)
    # XLA's convolution appears once per pass given to it: the forward, the transposed
    # convolution of the input gradient, the one of the kernel gradient
    forward, full = traced(conv, x, w, dimension_numbers=DN, **kw)
    assert count(forward, "conv_general_dilated") == (passes[0] == "xla")
    assert count(full, "conv_general_dilated") == passes.count("xla")


@pytest.mark.parametrize("passes", [("xla", "gemm"), ("xla", "gemm", "cudnn"), "gemm"])
def test_passes_are_three_known_implementations(passes):
    with pytest.raises(UserError, match="three of xla, gemm, winograd"):
        conv_general_dilated_by_passes(passes)
