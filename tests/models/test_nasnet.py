"""NASNet-A: Cadene's padding recipes, the factorized reduction and a whole (small) NASNet against
float64 NumPy, layer sizes of NASNet-A Large at 331."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.models import common, get_model, nasnet

from tests.models.references import (assert_forward_close, bn_ref, conv2d_ref, dense_ref, global_avg_pool_ref,
                                     pool_ref, random_images, random_variables, relu, shapes_at_full_size, sub)

CONV = common.conv_def("xla", jnp.float32)
NORM = common.norm_def(False, jnp.float32)


def _cadene_shifted_conv(x, kernel, stride, padding, groups):
    """Cadene's BranchSeparablesReduction / MaxPoolPad recipe: one zero row and column at the top-left,
    the convolution with its usual padding, then drop the first output row and column."""
    x = np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))
    return conv2d_ref(x, kernel, stride, padding, groups)[:, 1:, 1:]


@pytest.mark.parametrize("kernel,stride,size", [(5, 2, 42), (7, 2, 42), (3, 1, 21), (5, 2, 9)])
def test_nasnet_shifted_branch_equals_cadenes_pad_and_crop(kernel, stride, size):
    branch = nasnet.Branch(3, kernel, stride, CONV, NORM, shifted=True)
    x = np.random.default_rng(8).normal(size=(1, size, size, 3)).astype(np.float32)
    variables = random_variables(branch, x)
    p, s = variables["params"], variables["batch_stats"]
    y = _cadene_shifted_conv(relu(x), p["separable1_depthwise"]["kernel"], stride, kernel // 2, 3)
    y = relu(bn_ref(conv2d_ref(y, p["separable1_pointwise"]["kernel"]), s["bn1"], p["bn1"]))
    y = conv2d_ref(y, p["separable2_depthwise"]["kernel"], 1, kernel // 2, 3)
    y = bn_ref(conv2d_ref(y, p["separable2_pointwise"]["kernel"]), s["bn2"], p["bn2"])
    np.testing.assert_allclose(branch.apply(variables, x), y, rtol=1e-4, atol=1e-5)


def test_nasnet_shifted_pools_and_factorized_reduction_match_numpy():
    x = np.random.default_rng(9).normal(size=(1, 8, 8, 2)).astype(np.float32)
    padded = np.pad(x, ((0, 0), (1, 0), (1, 0), (0, 0)))  # zeros that take part in the max and mean
    got = nasnet._shifted_pool(jnp.asarray(x), lambda y: common.max_pool(y, 3, 2, padding=1))
    np.testing.assert_allclose(got, pool_ref(padded, 3, 2, 1, "max")[:, 1:, 1:])
    got = nasnet._shifted_pool(jnp.asarray(x), lambda y: common.avg_pool(y, 3, 2, 1, count_include_pad=False))
    np.testing.assert_allclose(got, pool_ref(padded, 3, 2, 1, "avg", count_include_pad=False)[:, 1:, 1:],
                               rtol=1e-5)

    module = nasnet.FactorizedReduction(4, CONV, NORM)
    x = np.random.default_rng(10).normal(size=(1, 7, 7, 3)).astype(np.float32)
    variables = random_variables(module, x)
    np.testing.assert_allclose(module.apply(variables, x), factorized_reduction_ref(x, variables),
                               rtol=1e-4, atol=1e-5)


# --- the whole network, after Cadene's pretrainedmodels/models/nasnet.py ---------------------------

def factorized_reduction_ref(x, variables):
    """ReLU; path 1: 1×1/2 conv; path 2: shift by one pixel (pad bottom/right, drop the first row and
    column), 1×1/2 conv; concatenate; BN."""
    p, s = variables["params"], variables["batch_stats"]
    x = relu(x)
    shifted = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))[:, 1:, 1:]
    paths = [conv2d_ref(x[:, ::2, ::2], p["path1_conv"]["kernel"]),
             conv2d_ref(shifted[:, ::2, ::2], p["path2_conv"]["kernel"])]
    return bn_ref(np.concatenate(paths, axis=-1), s["bn"], p["bn"])


def relu_conv_bn_ref(x, variables):
    p, s = variables["params"], variables["batch_stats"]
    return bn_ref(conv2d_ref(relu(x), p["conv"]["kernel"]), s["bn"], p["bn"])


def separables_ref(x, variables, kernel, stride, shifted=False):
    """BranchSeparables: twice (ReLU, depthwise k×k, pointwise 1×1, BN); only the first is strided, and
    with `shifted` (BranchSeparablesReduction) it is Cadene's pad-top-left, convolve, crop."""
    p, s = variables["params"], variables["batch_stats"]
    for index, step in ((1, stride), (2, 1)):
        depthwise = p[f"separable{index}_depthwise"]["kernel"]
        x = relu(x)
        if shifted and index == 1:
            x = _cadene_shifted_conv(x, depthwise, step, kernel // 2, x.shape[-1])
        else:
            x = conv2d_ref(x, depthwise, step, kernel // 2, groups=x.shape[-1])
        x = bn_ref(conv2d_ref(x, p[f"separable{index}_pointwise"]["kernel"]), s[f"bn{index}"], p[f"bn{index}"])
    return x


def adapt_ref(x_prev, x, variables):
    """The previous-but-one cell's output brought to `x`'s size: factorized reduction or ReLU-conv-BN."""
    if x_prev.shape[1] != x.shape[1]:
        return factorized_reduction_ref(x_prev, variables)
    return relu_conv_bn_ref(x_prev, variables)


def avg3(x, stride=1):
    return pool_ref(x, 3, stride, 1, "avg", count_include_pad=False)


def normal_cell_ref(x, x_prev, variables):
    v = lambda name: sub(variables, name)  # noqa: E731
    right = relu_conv_bn_ref(x, v("adapt"))
    left = adapt_ref(x_prev, right, v("adapt_prev"))
    c0 = separables_ref(right, v("comb0_left"), 5, 1) + separables_ref(left, v("comb0_right"), 3, 1)
    c1 = separables_ref(left, v("comb1_left"), 5, 1) + separables_ref(left, v("comb1_right"), 3, 1)
    c2 = avg3(right) + left
    c3 = avg3(left) + avg3(left)
    c4 = separables_ref(right, v("comb4_left"), 3, 1) + right
    return np.concatenate([left, c0, c1, c2, c3, c4], axis=-1)


def reduction_cell_ref(x, x_prev, variables, shifted=False):
    """CellStem0 (x_prev None: the second input is x itself), CellStem1, ReductionCell0 (`shifted`:
    MaxPoolPad, AvgPoolPad, BranchSeparablesReduction) and ReductionCell1."""
    v = lambda name: sub(variables, name)  # noqa: E731

    def pool(y, kind):
        if not shifted:
            return pool_ref(y, 3, 2, 1, kind, count_include_pad=False)
        padded = np.pad(y, ((0, 0), (1, 0), (1, 0), (0, 0)))
        return pool_ref(padded, 3, 2, 1, kind, count_include_pad=False)[:, 1:, 1:]

    a = relu_conv_bn_ref(x, v("adapt"))
    b = x if x_prev is None else adapt_ref(x_prev, a, v("adapt_prev"))
    sep = lambda y, name, k, stride: separables_ref(y, v(name), k, stride, shifted)  # noqa: E731
    c0 = sep(a, "comb0_left", 5, 2) + sep(b, "comb0_right", 7, 2)
    c1 = pool(a, "max") + sep(b, "comb1_right", 7, 2)
    c2 = pool(a, "avg") + sep(b, "comb2_right", 5, 2)
    c3 = avg3(c0) + c1
    c4 = sep(c0, "comb4_left", 3, 1) + pool(a, "max")
    return np.concatenate([c1, c2, c3, c4], axis=-1)


def nasnet_ref(variables, x, cells_per_stack):
    """3×3/2 conv (no padding) and BN; the two stem cells; three stacks of Normal cells with a Reduction
    cell between them (each cell takes the two cells before it; after a reduction the first Normal cell
    takes the reduction and the cell before the reduction's first input); ReLU, average pool, classifier."""
    v = lambda name: sub(variables, name)  # noqa: E731
    p, s = variables["params"], variables["batch_stats"]
    x0 = bn_ref(conv2d_ref(x, p["conv0"]["kernel"], stride=2), s["conv0_bn"], p["conv0_bn"])
    stem0 = reduction_cell_ref(x0, None, v("cell_stem_0"))
    prev, cur = stem0, reduction_cell_ref(stem0, x0, v("cell_stem_1"))
    index = 0
    for stack in range(3):
        if stack:
            cur = reduction_cell_ref(cur, prev, v(f"reduction_cell_{stack - 1}"), shifted=stack == 1)
        for _ in range(cells_per_stack):
            prev, cur = cur, normal_cell_ref(cur, prev, v(f"cell_{index}"))
            index += 1
    return dense_ref(global_avg_pool_ref(relu(cur)), p["head"])


SMALL = dict(filters=8, stem_filters=8, cells_per_stack=2)


@pytest.fixture(scope="module")
def small_nasnet():
    """Two Normal cells per stack, 8 filters, on 47×47: conv0 -> 23, stems -> 12 -> 6, reductions -> 3 -> 2."""
    x = random_images(2, 47, seed=9)
    return x, random_variables(get_model("nasnet_a_large", num_classes=5, **SMALL), x)


def test_nasnet_matches_numpy_end_to_end(small_nasnet):
    x, variables = small_nasnet
    model = get_model("nasnet_a_large", num_classes=5, **SMALL)
    assert_forward_close(jax.jit(model.apply)(variables, x), nasnet_ref(variables, x, 2))


def test_nasnet_a_large_sizes_and_small_forward():
    # 331 -> conv0 165 -> stems 83, 42 -> 6 cells of 1008 at 42 -> 1344 at 21 -> 2016 -> 2688 at 11 -> 4032.
    names = ["cell_stem_0", "cell_stem_1", "cell_5", "reduction_cell_0", "cell_11", "reduction_cell_1",
             "cell_17"]
    assert shapes_at_full_size("nasnet_a_large", *names) == [
        (1, 83, 83, 168), (1, 42, 42, 336), (1, 42, 42, 1008), (1, 21, 21, 1344), (1, 21, 21, 2016),
        (1, 11, 11, 2688), (1, 11, 11, 4032)]
    model = get_model("nasnet_a_large", num_classes=None, filters=8, stem_filters=8, cells_per_stack=1)
    x = jnp.ones((1, 33, 33, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, 8 * 24)
