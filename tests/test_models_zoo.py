"""Each architecture's building blocks against float64 NumPy, its layer sizes at full resolution (under
`jax.eval_shape`), and small forward passes at reduced width."""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from visionax.models import efficientnet, get_model, input_size
from visionax.models import common, densenet, googlenet, mobilenet, nasnet

from test_models import bn_ref, conv2d_ref, pool_ref, random_variables

CONV = common.conv_def("xla", jnp.float32)
NORM = common.norm_def(False, jnp.float32)


def relu(x):
    return np.maximum(x, 0)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def conv_bn_ref(x, variables, stride=1, padding=0, groups=1, act=relu):
    """`common.ConvBNAct` in NumPy from its variables {"params": {conv, bn}, "batch_stats": {bn}}."""
    p, s = variables["params"], variables["batch_stats"]
    y = bn_ref(conv2d_ref(x, p["conv"]["kernel"], stride, padding, groups), s["bn"], p["bn"])
    return act(y) if act else y


def sub(variables, name):
    return {c: variables[c][name] for c in variables if name in variables[c]}


def shapes_at_full_size(name, *paths):
    """Output shapes of the named submodules at the model's standard resolution, without computing."""
    model = get_model(name)
    size = input_size(name)
    images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    _, state = jax.eval_shape(lambda v, x: model.apply(v, x, capture_intermediates=True,
                                                       mutable=["intermediates"]), variables, images)
    return [state["intermediates"][path]["__call__"][0].shape for path in paths]


# --- shared pieces ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size,window,stride,padding,ceil", [
    (112, 3, 2, 0, True), (14, 2, 2, 0, True), (9, 3, 1, 1, True), (7, 3, 2, 1, False), (10, 3, 2, 0, True),
])
def test_max_pool_matches_pytorch_ceil_and_padding(size, window, stride, padding, ceil):
    x = np.random.default_rng(0).normal(size=(2, size, size, 3))
    got = common.max_pool(jnp.asarray(x, jnp.float32), window, stride, padding, ceil_mode=ceil)
    np.testing.assert_allclose(got, pool_ref(x, window, stride, padding, "max", ceil), rtol=1e-6)


def test_avg_pool_without_padding_counts_and_adaptive_pool():
    x = np.random.default_rng(0).normal(size=(2, 7, 7, 3))
    got = common.avg_pool(jnp.asarray(x, jnp.float32), 3, 2, 1, count_include_pad=False)
    np.testing.assert_allclose(got, pool_ref(x, 3, 2, 1, "avg", count_include_pad=False),
                               rtol=1e-5, atol=1e-7)
    # AdaptiveAvgPool2d(3) on 7×7: bins [0,3), [2,5), [4,7) (floor(i·7/3) to ceil((i+1)·7/3)).
    got = common.adaptive_avg_pool(jnp.asarray(x, jnp.float32), 3)
    bins = [(0, 3), (2, 5), (4, 7)]
    want = np.stack([np.stack([x[:, a:b, c:d].mean(axis=(1, 2)) for c, d in bins], 1) for a, b in bins], 1)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_make_divisible_matches_torchvision():
    assert [common.make_divisible(v) for v in (32, 35.2, 17.6, 1280 * 1.1, 24 * 0.35, 3)] == [
        32, 32, 16, 1408, 8, 8]


# --- AlexNet / ZFNet / VGG ----------------------------------------------------------------------------

def test_alexnet_matches_numpy_end_to_end():
    model = get_model("alexnet", num_classes=5, width_mult=1 / 16)
    x = np.random.default_rng(1).normal(size=(2, 64, 64, 3)).astype(np.float32)
    variables = random_variables(model, x)
    p = variables["params"]
    y = relu(conv2d_ref(x, p["conv1"]["kernel"], 4, 2, bias=p["conv1"]["bias"]))  # 64 -> 15
    y = pool_ref(y, 3, 2)                                                            # -> 7
    y = pool_ref(relu(conv2d_ref(y, p["conv2"]["kernel"], 1, 2, bias=p["conv2"]["bias"])), 3, 2)  # -> 3
    for name in ("conv3", "conv4", "conv5"):
        y = relu(conv2d_ref(y, p[name]["kernel"], 1, 1, bias=p[name]["bias"]))
    y = pool_ref(y, 3, 2)                                                            # -> 1
    y = np.repeat(np.repeat(y, 6, axis=1), 6, axis=2).reshape(2, -1)                # adaptive pool to 6×6
    for name in ("fc6", "fc7"):
        y = relu(y @ p[name]["kernel"] + p[name]["bias"])
    want = y @ p["head"]["kernel"] + p["head"]["bias"]
    np.testing.assert_allclose(model.apply(variables, x), want, rtol=1e-4, atol=1e-5)
    # Dropout is active only in training, and then needs its key.
    train = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)})
    assert not np.allclose(train, want, atol=1e-4)


def test_zfnet_layer_sizes_are_the_papers():
    # Fig. 3: 110×110×96 after conv1, 26×26×256 after conv2, 13×13 for conv3..5, 6×6 after the pool.
    conv1, conv2, conv5 = shapes_at_full_size("zfnet", "conv1", "conv2", "conv5")
    assert conv1 == (1, 110, 110, 96) and conv2 == (1, 26, 26, 256) and conv5 == (1, 13, 13, 256)
    assert jax.eval_shape(get_model("zfnet").init, jax.random.key(0),
                          jnp.zeros((1, 224, 224, 3)))["params"]["fc6"]["kernel"].shape == (6 * 6 * 256, 4096)


@pytest.mark.parametrize("name,convs", [("vgg16", 13), ("vgg19", 16)])
def test_vgg_is_only_3x3_convolutions(name, convs):
    params = jax.eval_shape(get_model(name).init, jax.random.key(0), jnp.zeros((1, 224, 224, 3)))["params"]
    kernels = [params[f"conv{i}"]["kernel"].shape for i in range(1, convs + 1)]
    assert all(shape[:2] == (3, 3) for shape in kernels) and f"conv{convs + 1}" not in params
    assert params["fc6"]["kernel"].shape == (7 * 7 * 512, 4096)
    # Small and fast: width 1/16 on 32×32 images (the 1×1 map is spread to 7×7 by the adaptive pool).
    model = get_model(name, num_classes=3, width_mult=1 / 16)
    x = jnp.ones((1, 32, 32, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, 3)


# --- GoogLeNet ------------------------------------------------------------------------------------------

def test_inception_module_matches_numpy():
    module = googlenet.Inception(2, 3, 4, 2, 3, 2, conv=CONV, norm=NORM)
    x = np.random.default_rng(2).normal(size=(2, 5, 5, 6)).astype(np.float32)
    variables = random_variables(module, x)
    v = lambda name: sub(variables, name)
    branch1 = conv_bn_ref(x, v("branch1"))
    branch2 = conv_bn_ref(conv_bn_ref(x, v("branch2_a")), v("branch2_b"), padding=1)
    branch3 = conv_bn_ref(conv_bn_ref(x, v("branch3_a")), v("branch3_b"), padding=1)
    branch4 = conv_bn_ref(pool_ref(x, 3, 1, 1, "max", ceil_mode=True), v("branch4"))
    want = np.concatenate([branch1, branch2, branch3, branch4], axis=-1)
    np.testing.assert_allclose(module.apply(variables, x), want, rtol=1e-4, atol=1e-5)


def test_googlenet_sizes_and_small_forward():
    sizes = shapes_at_full_size("googlenet", "inception3a", "inception4a", "inception4e", "inception5b")
    assert sizes == [(1, 28, 28, 256), (1, 14, 14, 512), (1, 14, 14, 832), (1, 7, 7, 1024)]
    model = get_model("googlenet", num_classes=None, width_mult=1 / 8)
    x = jnp.ones((1, 32, 32, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, 128)


# --- DenseNet -------------------------------------------------------------------------------------------

def test_dense_layer_concatenates_its_new_features_to_its_input():
    layer = densenet.DenseLayer(growth_rate=3, bn_size=2, drop_rate=0.0, conv=CONV, norm=NORM)
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 5)).astype(np.float32)
    variables = random_variables(layer, x, train=False)
    p, s = variables["params"], variables["batch_stats"]
    y = conv2d_ref(relu(bn_ref(x, s["norm1"], p["norm1"])), p["conv1"]["kernel"])
    y = conv2d_ref(relu(bn_ref(y, s["norm2"], p["norm2"])), p["conv2"]["kernel"], padding=1)
    out = layer.apply(variables, x, train=False)
    np.testing.assert_array_equal(out[..., :5], x)
    np.testing.assert_allclose(out[..., 5:], y, rtol=1e-4, atol=1e-5)


def test_densenet121_grows_by_growth_rate_and_halves_at_transitions():
    # Full size: 64 + 6·32 = 256 -> 128 -> +12·32 = 512 -> 256 -> +24·32 = 1024 -> 512 -> +16·32 = 1024.
    layers = ["block1_layer6", "block2_layer12", "block3_layer24", "block4_layer16"]
    assert [s[-1] for s in shapes_at_full_size("densenet121", *layers)] == [256, 512, 1024, 1024]
    # Small and fast: two layers per block, growth 4: 8 + 8 -> 8 + 8 -> 8 + 8 -> 8 + 8 = 16 features.
    model = densenet.DenseNet(block_config=(2, 2, 2, 2), num_classes=None, growth_rate=4,
                              num_init_features=8)
    x = jnp.ones((1, 32, 32, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, 16)


# --- MobileNet ------------------------------------------------------------------------------------------

def test_depthwise_separable_block_matches_numpy():
    x = np.random.default_rng(4).normal(size=(2, 6, 6, 4)).astype(np.float32)
    dw = mobilenet.ConvBNReLU6(4, 3, CONV, NORM, stride=2, depthwise=True)
    pw = mobilenet.ConvBNReLU6(6, 1, CONV, NORM)
    dv = random_variables(dw, x)
    assert dv["params"]["conv"]["kernel"].shape == (3, 3, 1, 4)  # one 3×3 filter per channel
    y = dw.apply(dv, x)
    pv = random_variables(pw, y, seed=1)
    relu6 = lambda z: np.clip(z, 0, 6)
    want = conv_bn_ref(conv_bn_ref(x, dv, 2, 1, groups=4, act=relu6), pv, act=relu6)
    np.testing.assert_allclose(pw.apply(pv, y), want, rtol=1e-4, atol=1e-5)


def test_inverted_residual_matches_numpy():
    block = mobilenet.InvertedResidual(4, 1, 6, CONV, NORM)
    x = np.random.default_rng(5).normal(size=(2, 5, 5, 4)).astype(np.float32)
    variables = random_variables(block, x)
    v = lambda name: sub(variables, name)
    relu6 = lambda z: np.clip(z, 0, 6)
    y = conv_bn_ref(x, v("expand"), act=relu6)                           # 4 -> 24
    y = conv_bn_ref(y, v("depthwise"), padding=1, groups=24, act=relu6)
    y = conv_bn_ref(y, v("project"), act=None)                           # linear bottleneck
    np.testing.assert_allclose(block.apply(variables, x), x + y, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,features", [("mobilenet_v1", 256), ("mobilenet_v2", 1280)])
def test_mobilenets_small_forward(name, features):
    model = get_model(name, num_classes=None, width_mult=0.25)
    x = jnp.ones((1, 32, 32, 3))
    assert jax.jit(model.apply)(random_variables(model, x), x).shape == (1, features)


# --- EfficientNet ---------------------------------------------------------------------------------------

def test_compound_scaling_rule_gives_every_variant():
    # B7 = B0 with channels ×2.0 and repeats ×3.1 (rounded up); its resolution is 600.
    b7 = efficientnet.scale_stages(2.0, 3.1)
    assert [stage[4] for stage in b7] == [32, 48, 80, 160, 224, 384, 640]
    assert [stage[5] for stage in b7] == [4, 7, 7, 10, 10, 13, 4]
    assert input_size("efficientnet_b7") == 600
    widths, depths, sizes = zip(*[c[:3] for c in efficientnet.COEFFICIENTS.values()])
    assert list(widths) == sorted(widths) and list(depths) == sorted(depths) and list(sizes) == sorted(sizes)


def test_mbconv_matches_numpy():
    block = efficientnet.MBConv(8, 5, 1, 6, 0.0, CONV, NORM)
    x = np.random.default_rng(6).normal(size=(2, 6, 6, 8)).astype(np.float32)
    variables = random_variables(block, x, train=False)
    v = lambda name: sub(variables, name)
    silu = lambda z: z * sigmoid(z)
    y = conv_bn_ref(x, v("expand"), act=silu)                                   # 8 -> 48
    y = conv_bn_ref(y, v("depthwise"), padding=2, groups=48, act=silu)
    se = variables["params"]["se"]
    assert se["fc1"]["kernel"].shape == (48, 2)                                 # squeeze to in/4 = 2
    hidden = silu(y.mean(axis=(1, 2)) @ se["fc1"]["kernel"] + se["fc1"]["bias"])
    y = y * sigmoid(hidden @ se["fc2"]["kernel"] + se["fc2"]["bias"])[:, None, None]
    y = conv_bn_ref(y, v("project"), act=None)
    np.testing.assert_allclose(block.apply(variables, x, train=False), x + y, rtol=1e-4, atol=1e-5)


def test_stochastic_depth_drops_whole_residual_branches():
    block = efficientnet.MBConv(4, 3, 1, 1, 0.5, CONV, common.norm_def(True, jnp.float32))
    x = np.random.default_rng(7).normal(size=(64, 4, 4, 4)).astype(np.float32)
    variables = random_variables(block, x, train=True)
    eval_block = efficientnet.MBConv(4, 3, 1, 1, 0.0, CONV, common.norm_def(True, jnp.float32))
    branch = eval_block.apply(variables, x, train=True, mutable=["batch_stats"])[0] - x
    out, _ = block.apply(variables, x, train=True, rngs={"dropout": jax.random.key(0)},
                         mutable=["batch_stats"])
    kept = np.all(np.isclose(out, x + 2 * branch, atol=1e-5), axis=(1, 2, 3))
    dropped = np.all(np.isclose(out, x, atol=1e-6), axis=(1, 2, 3))
    assert np.all(kept ^ dropped) and 16 < kept.sum() < 48  # each sample: all or nothing, p = 0.5


def test_efficientnet_small_forward_trains_with_dropout_key():
    model = efficientnet.EfficientNet(width_mult=0.25, depth_mult=0.5, num_classes=4)
    x = jnp.ones((2, 32, 32, 3))
    variables = random_variables(model, x)
    train_step = jax.jit(lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key},
                                                       mutable=["batch_stats"]))
    logits, updates = train_step(variables, x, jax.random.key(0))
    assert logits.shape == (2, 4) and set(updates) == {"batch_stats"}


# --- NASNet ---------------------------------------------------------------------------------------------

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
    p, s = variables["params"], variables["batch_stats"]
    shifted = np.pad(relu(x)[:, 1:, 1:], ((0, 0), (0, 1), (0, 1), (0, 0)))
    paths = [conv2d_ref(relu(x)[:, ::2, ::2], p["path1_conv"]["kernel"]),
             conv2d_ref(shifted[:, ::2, ::2], p["path2_conv"]["kernel"])]
    want = bn_ref(np.concatenate(paths, axis=-1), s["bn"], p["bn"])
    np.testing.assert_allclose(module.apply(variables, x), want, rtol=1e-4, atol=1e-5)


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
