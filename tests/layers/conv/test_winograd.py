"""conv_impl "winograd" (F(2×2, 3×3) for stride-1 3×3 convolutions, gemm for the others) equals
lax.conv_general_dilated in values and gradients within 1e-5; its transforms compute one tile."""

import numpy as np
import pytest

from tests.layers.conv.cases import DN, case, check_case, inputs, traced
from visionax.layers.conv import ConvTuning, conv_general_dilated_for, winograd

# stride-1 3×3 cases Winograd computes (the others fall back to gemm: "same_s2", "groups2")
WINOGRAD = ["same_s1", "valid_s1", "explicit_pad_3x3_odd", "negative_pad", "wide_same_s1",
            "same_s2", "groups2"]


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("name", WINOGRAD)
def test_winograd_matches_lax_values_and_grads(name, chunked):
    tuning = ConvTuning(chunk_bytes=1 if chunked else ConvTuning().chunk_bytes)
    check_case(conv_general_dilated_for("winograd", tuning), name, seed=5)


def _tile_products(eqns) -> int:
    """Matrix products batched over the 16 positions of the 4×4 transformed tiles."""
    return sum(eqn.primitive.name == "dot_general"
               and eqn.params["dimension_numbers"][1] == ((0,), (0,))
               and eqn.invars[0].aval.shape[0] == 16 for eqn in eqns)


@pytest.mark.parametrize("name", WINOGRAD)
def test_winograd_computes_every_pass_where_it_applies(name):
    # one tile product for the forward pass, one for each gradient; none where gemm takes over
    _, spatial, kernel, cin, cout, kw = case(name)
    x, w, _ = inputs(5, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    forward, full = traced(conv_general_dilated_for("winograd"), x, w, dimension_numbers=DN, **kw)
    applies = name not in ("same_s2", "groups2")
    assert (_tile_products(forward), _tile_products(full)) == ((1, 3) if applies else (0, 0))


def test_winograd_transforms_compute_one_tile():
    # Y = Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A equals the 2×2 valid correlation of a 4×4 tile, in float64
    rng = np.random.default_rng(6)
    tile, kernel = rng.standard_normal((4, 4)), rng.standard_normal((3, 3))
    b_t, g, a_t = (m.astype(np.float64) for m in (
        winograd.INPUT_TRANSFORM, winograd.KERNEL_TRANSFORM, winograd.OUTPUT_TRANSFORM))
    got = a_t @ ((g @ kernel @ g.T) * (b_t @ tile @ b_t.T)) @ a_t.T
    direct = np.array([[np.sum(tile[i:i + 3, j:j + 3] * kernel) for j in range(2)]
                       for i in range(2)])
    np.testing.assert_allclose(got, direct, rtol=1e-12, atol=1e-12)
