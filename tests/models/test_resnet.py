"""ResNet family: the CIFAR stem, width and encoder options, blocks and whole networks (basic, bottleneck,
ResNeXt, SE) against float64 NumPy, synced and split BatchNorm."""

import functools

import numpy as np
import pytest

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec as P

from visionax.errors import UserError
from visionax.models import get_model, model_options
from visionax.models import resnet
from visionax.models.common import conv_def, norm_def

from visionax.models.costs import param_count

from tests.models.references import (assert_forward_close, bn_ref, conv2d_ref, dense_ref, global_avg_pool_ref,
                                     pool_ref, random_images, random_variables, relu, squeeze_excite_ref, sub)


pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def test_cifar_stem_and_width_change_only_what_they_should():
    # The CIFAR stem swaps the 7x7 conv (7*7*3*64) for a 3x3 one (3*3*3*64); no other parameter changes.
    assert param_count("resnet18", cifar_stem=True) == param_count("resnet18") - (49 - 9) * 3 * 64
    # width=16 is a quarter of every channel count: the convolutions have 1/16 of the weights.
    assert param_count("resnet18", width=16, num_classes=None) < param_count("resnet18") / 15


@pytest.mark.parametrize("name,features", [("resnet18", 128), ("resnet50", 512)])
def test_encoder_returns_pooled_features(name, features):
    # width=16: stages of 16, 32, 64, 128 planes; bottlenecks expand by 4.
    for num_classes in (None, 0):
        model = get_model(name, num_classes=num_classes, width=16, cifar_stem=True)
        x = jnp.ones((2, 32, 32, 3))
        variables = random_variables(model, x)
        assert "head" not in variables["params"]
        out = jax.jit(model.apply)(variables, x)
        assert out.shape == (2, features) and out.dtype == jnp.float32


def test_cifar_stem_keeps_resolution_and_imagenet_stem_divides_by_four():
    x = jnp.ones((2, 32, 32, 3))
    for cifar_stem, size in ((True, 32), (False, 8)):
        model = get_model("resnet18", num_classes=10, width=8, cifar_stem=cifar_stem)
        variables = random_variables(model, x)
        assert variables["params"]["conv1"]["kernel"].shape == ((3, 3, 3, 8) if cifar_stem else (7, 7, 3, 8))
        logits, state = jax.jit(functools.partial(
            model.apply, capture_intermediates=True, mutable=["intermediates"]))(variables, x)
        assert logits.shape == (2, 10)
        layer1 = state["intermediates"]["layer1_0"]["__call__"][0]
        layer4 = state["intermediates"]["layer4_1"]["__call__"][0]
        assert layer1.shape == (2, size, size, 8)
        assert layer4.shape == (2, size // 8, size // 8, 64)


def test_cifar_stem_stride_two_halves_the_maps_with_pytorch_padding():
    # Conv2d(3, 8, 3, stride=2, padding=1), no max-pool: 32×32 images give 16×16 maps in layer1.
    model = get_model("resnet18", num_classes=10, width=8, cifar_stem=True, stem_stride=2)
    x = jax.random.normal(jax.random.key(2), (2, 32, 32, 3))
    variables = random_variables(model, x)
    _, state = jax.jit(functools.partial(
        model.apply, capture_intermediates=True, mutable=["intermediates"]))(variables, x)
    conv = conv2d_ref(x, variables["params"]["conv1"]["kernel"], stride=2, padding=1)
    np.testing.assert_allclose(state["intermediates"]["conv1"]["__call__"][0], conv, rtol=1e-5, atol=1e-5)
    assert state["intermediates"]["layer1_0"]["__call__"][0].shape == (2, 16, 16, 8)


@pytest.mark.parametrize("options,problem", [
    ({"stem_stride": 2}, "applies only to the CIFAR stem"),
    ({"cifar_stem": True, "stem_stride": 3}, "must be 1 or 2"),
])
def test_stem_stride_outside_the_cifar_stem_is_a_user_error(options, problem):
    with pytest.raises(UserError, match=problem):
        get_model("resnet18", num_classes=10, width=8, **options)


def test_stem_convolution_and_maxpool_match_pytorch_padding():
    # Conv2d(3, 8, 7, stride=2, padding=3) then BN (eval), ReLU, MaxPool2d(3, 2, padding=1), in NumPy.
    model = get_model("resnet18", num_classes=10, width=8)
    x = jax.random.normal(jax.random.key(1), (2, 20, 20, 3))
    variables = random_variables(model, x)
    _, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    conv = conv2d_ref(x, variables["params"]["conv1"]["kernel"], stride=2, padding=3)
    np.testing.assert_allclose(state["intermediates"]["conv1"]["__call__"][0], conv, rtol=1e-5, atol=1e-5)
    y = np.maximum(bn_ref(conv, variables["batch_stats"]["bn1"], variables["params"]["bn1"]), 0)
    pooled = pool_ref(y, 3, 2, padding=1)
    assert pooled.shape == (2, 5, 5, 8)  # 20 -> 10 -> 5
    block = resnet.BasicBlock(8, 1, conv=conv_def("xla", jnp.float32), norm=norm_def(False, jnp.float32))
    block_variables = {c: variables[c]["layer1_0"] for c in variables}
    np.testing.assert_allclose(state["intermediates"]["layer1_0"]["__call__"][0],
                               block.apply(block_variables, jnp.asarray(pooled, jnp.float32)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,in_channels", [(1, 4), (2, 4)])
def test_basic_block_matches_numpy(stride, in_channels):
    planes = 4 if stride == 1 else 6
    block = resnet.BasicBlock(planes, stride, conv=conv_def("xla", jnp.float32),
                              norm=norm_def(False, jnp.float32))
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, in_channels))
    variables = random_variables(block, x)
    params, stats = variables["params"], variables["batch_stats"]
    out = block.apply(variables, x)

    y = conv2d_ref(x, params["conv1"]["kernel"], stride=stride, padding=1)
    y = np.maximum(bn_ref(y, stats["bn1"], params["bn1"]), 0)
    y = bn_ref(conv2d_ref(y, params["conv2"]["kernel"], padding=1), stats["bn2"], params["bn2"])
    if stride == 1:
        shortcut = np.asarray(x, np.float64)
        assert "downsample_conv" not in params
    else:
        shortcut = bn_ref(conv2d_ref(x, params["downsample_conv"]["kernel"], stride=2),
                          stats["downsample_bn"], params["downsample_bn"])
    np.testing.assert_allclose(out, np.maximum(y + shortcut, 0), rtol=1e-4, atol=1e-4)


def block_ref(x, variables, kind, planes, stride, groups=1, base_width=64, se=False):
    """A torchvision residual block in NumPy: relu(F(x) + shortcut(x)). "basic": 3×3 (stride) – BN – ReLU
    – 3×3 – BN; "bottleneck": 1×1 to planes·base_width/64·groups – BN – ReLU – 3×3 (stride, `groups`)
    – BN – ReLU – 1×1 to 4·planes – BN (v1.5: the stride on the 3×3). SE gates F(x) (reduction 16).
    The shortcut is the identity, or a strided 1×1 conv and BN where the shape changes."""
    p, s = variables["params"], variables["batch_stats"]
    bn = lambda y, name: bn_ref(y, s[name], p[name])  # noqa: E731
    conv = lambda y, name, **kw: conv2d_ref(y, p[name]["kernel"], **kw)  # noqa: E731
    if kind == "basic":
        out = planes
        y = relu(bn(conv(x, "conv1", stride=stride, padding=1), "bn1"))
        y = bn(conv(y, "conv2", padding=1), "bn2")
    else:
        inner, out = int(planes * base_width / 64) * groups, 4 * planes
        assert p["conv2"]["kernel"].shape == (3, 3, inner // groups, inner)
        y = relu(bn(conv(x, "conv1"), "bn1"))
        y = relu(bn(conv(y, "conv2", stride=stride, padding=1, groups=groups), "bn2"))
        y = bn(conv(y, "conv3"), "bn3")
    if se:
        assert p["se"]["fc1"]["kernel"].shape == (out, out // 16)
        y = squeeze_excite_ref(y, p["se"])
    if stride != 1 or x.shape[-1] != out:
        shortcut = bn(conv(x, "downsample_conv", stride=stride), "downsample_bn")
    else:
        assert "downsample_conv" not in p
        shortcut = x
    return relu(y + shortcut)


def resnet_ref(variables, x, stage_sizes, kind, width, cifar_stem=False, **block):
    """ResNet in NumPy: the stem (7×7/2 conv, BN, ReLU, 3×3/2 max-pool with padding 1; or the CIFAR stem's
    3×3 conv, BN, ReLU), four stages of `width`·2^i planes whose first block (after the first stage)
    has stride 2, a global average pool and the classifier."""
    v = lambda name: sub(variables, name)  # noqa: E731
    stem = v("conv1")["params"]["kernel"], v("bn1")
    if cifar_stem:
        y = relu(bn_ref(conv2d_ref(x, stem[0], padding=1), stem[1]["batch_stats"], stem[1]["params"]))
    else:
        y = relu(bn_ref(conv2d_ref(x, stem[0], stride=2, padding=3), stem[1]["batch_stats"], stem[1]["params"]))
        y = pool_ref(y, 3, 2, padding=1)
    for stage, blocks in enumerate(stage_sizes):
        for index in range(blocks):
            stride = 2 if stage > 0 and index == 0 else 1
            y = block_ref(y, v(f"layer{stage + 1}_{index}"), kind, width * 2**stage, stride, **block)
    return dense_ref(global_avg_pool_ref(y), variables["params"]["head"])


# name, get_model options, image size, the architecture as the reference takes it.
WHOLE = {
    "resnet18": (dict(width=4), 32, dict(stage_sizes=(2, 2, 2, 2), kind="basic", width=4)),
    "resnet50": (dict(width=4, cifar_stem=True), 16,
                 dict(stage_sizes=(3, 4, 6, 3), kind="bottleneck", width=4, cifar_stem=True)),
    "resnext50_32x4d": (dict(width=16), 32, dict(stage_sizes=(3, 4, 6, 3), kind="bottleneck", width=16,
                                                 groups=32, base_width=4)),
    "se_resnet50": (dict(width=8), 32, dict(stage_sizes=(3, 4, 6, 3), kind="bottleneck", width=8, se=True)),
}


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_whole_resnet_matches_numpy(name):
    options, size, architecture = WHOLE[name]
    model = get_model(name, num_classes=5, **options)
    x = random_images(2, size, seed=5)
    variables = random_variables(model, x)
    assert_forward_close(jax.jit(model.apply)(variables, x), resnet_ref(variables, x, **architecture))


def test_residual_block_with_zero_last_scale_is_identity():
    # With the last BN's scale and bias zero the residual branch vanishes: y = relu(0 + x) = relu(x).
    block = resnet.Bottleneck(4, 1, conv=conv_def("xla", jnp.float32), norm=norm_def(False, jnp.float32),
                              groups=2, base_width=64)
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 16))
    variables = random_variables(block, x)
    params = dict(variables["params"], bn3={"scale": jnp.zeros(16), "bias": jnp.zeros(16)})
    out = block.apply({"params": params, "batch_stats": variables["batch_stats"]}, x)
    np.testing.assert_array_equal(out, jax.nn.relu(x))


def test_bottleneck_grouped_matches_numpy_and_squeeze_excite():
    block = resnet.Bottleneck(4, 2, conv=conv_def("xla", jnp.float32), norm=norm_def(False, jnp.float32),
                              groups=2, base_width=32, se=True)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 8))
    variables = random_variables(block, x)
    params, stats = variables["params"], variables["batch_stats"]
    assert params["conv2"]["kernel"].shape == (3, 3, 2, 4)  # inner = int(4 * 32/64) * 2, 2 groups
    out = block.apply(variables, x)

    y = np.maximum(bn_ref(conv2d_ref(x, params["conv1"]["kernel"]), stats["bn1"], params["bn1"]), 0)
    y = conv2d_ref(y, params["conv2"]["kernel"], stride=2, padding=1, groups=2)
    y = np.maximum(bn_ref(y, stats["bn2"], params["bn2"]), 0)
    y = bn_ref(conv2d_ref(y, params["conv3"]["kernel"]), stats["bn3"], params["bn3"])
    se = params["se"]
    hidden = np.maximum(y.mean(axis=(1, 2)) @ se["fc1"]["kernel"] + se["fc1"]["bias"], 0)
    assert hidden.shape == (2, 1)  # 16 channels // reduction 16
    gate = 1 / (1 + np.exp(-(hidden @ se["fc2"]["kernel"] + se["fc2"]["bias"])))
    y = y * gate[:, None, None, :]
    shortcut = bn_ref(conv2d_ref(x, params["downsample_conv"]["kernel"], stride=2),
                      stats["downsample_bn"], params["downsample_bn"])
    np.testing.assert_allclose(out, np.maximum(y + shortcut, 0), rtol=1e-4, atol=1e-4)


def test_train_mode_updates_running_statistics_with_momentum_0_9():
    model = get_model("resnet18", num_classes=10, width=4, cifar_stem=True)
    x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3)) * 3 + 1
    variables = random_variables(model, x)
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    conv = conv2d_ref(x, variables["params"]["conv1"]["kernel"], padding=1)
    old = variables["batch_stats"]["bn1"]
    np.testing.assert_allclose(updates["batch_stats"]["bn1"]["mean"],
                               0.9 * old["mean"] + 0.1 * conv.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    # PyTorch stores the unbiased batch variance, flax the biased one; both blend with momentum 0.9.
    np.testing.assert_allclose(updates["batch_stats"]["bn1"]["var"],
                               0.9 * old["var"] + 0.1 * conv.var(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)


def test_bfloat16_computes_in_bf16_with_float32_params():
    model = get_model("resnet18", num_classes=10, width=4, cifar_stem=True, dtype=jnp.bfloat16)
    x = jnp.ones((2, 8, 8, 3))
    variables = random_variables(model, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
    logits, state = model.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
    assert state["intermediates"]["layer2_0"]["__call__"][0].dtype == jnp.bfloat16
    assert logits.dtype == jnp.float32


def test_synced_batchnorm_under_shard_map_equals_full_batch():
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    options = dict(num_classes=10, width=4, cifar_stem=True)
    synced = get_model("resnet18", bn_axis_name="data", **options)
    plain = get_model("resnet18", **options)
    x = jax.random.normal(jax.random.key(0), (16, 8, 8, 3))
    variables = random_variables(plain, x)

    def forward(model, variables, x):
        return model.apply(variables, x, train=True, mutable=["batch_stats"])

    sharded = jax.jit(jax.shard_map(
        lambda v, x: forward(synced, v, x), mesh=mesh,
        in_specs=(P(), P("data")), out_specs=(P("data"), P())))
    logits, updates = sharded(variables, x)
    want_logits, want_updates = forward(plain, variables, x)
    np.testing.assert_allclose(logits, want_logits, rtol=1e-4, atol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 updates, want_updates)

    # Without the axis name each device normalises with its own 2 images: the outputs differ.
    unsynced = jax.jit(jax.shard_map(
        lambda v, x: forward(plain, v, x)[0], mesh=mesh, in_specs=(P(), P("data")),
        out_specs=P("data")))
    assert not np.allclose(unsynced(variables, x), want_logits, atol=1e-3)


def test_split_batchnorm_resnet_equals_the_plain_resnet_on_each_slice():
    """bn_splits = 4: the training forward of 16 images equals the plain ResNet run on each group of
    4 images alone, and every running average is the mean of the four groups' updates."""
    options = dict(num_classes=10, width=4, cifar_stem=True)
    split, plain = get_model("resnet18", bn_splits=4, **options), get_model("resnet18", **options)
    x = jax.random.normal(jax.random.key(0), (16, 16, 16, 3)) * 2 + 0.5
    variables = random_variables(plain, x)

    steps = {}  # one jitted training forward per model, reused for the four slices

    def forward(model, x):
        if model not in steps:
            steps[model] = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
        return steps[model](variables, x)

    logits, updates = forward(split, x)
    parts = [forward(plain, part) for part in jnp.split(x, 4)]
    # Rounding differs (flax takes E[x²] − E[x]², the split layer two passes) and grows through 18 layers.
    np.testing.assert_allclose(logits, jnp.concatenate([part[0] for part in parts]), rtol=1e-4, atol=1e-4)
    expected = jax.tree.map(lambda *leaves: np.mean(leaves, axis=0), *[part[1] for part in parts])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), updates, expected)
    assert not np.allclose(logits, forward(plain, x)[0], atol=1e-2)  # whole-batch statistics differ
    # Evaluation uses the running averages: the split model is the plain one.
    np.testing.assert_allclose(split.apply(variables, x), plain.apply(variables, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(UserError, match="bn_splits"):
        get_model("resnet18", bn_splits=0)
    with pytest.raises(UserError, match="synchronised"):
        get_model("resnet18", bn_splits=2, bn_axis_name="data")


def test_resnet_options_and_their_errors():
    with pytest.raises(UserError, match="cifar_stem"):
        get_model("resnet50", cifar_stemm=True)
    with pytest.raises(UserError):
        get_model("resnet50", stage_sizes=(1, 1, 1, 1))  # fixed by the name
    assert {"cifar_stem", "stem_stride", "width", "dtype", "bn_axis_name", "conv_impl"} <= set(model_options("resnet18"))
    with pytest.raises(UserError, match="conv_impl"):
        get_model("resnet18", conv_impl="fft").init(jax.random.key(0), jnp.ones((1, 8, 8, 3)))


def _small_resnet18(**options):
    return get_model("resnet18", num_classes=3, cifar_stem=True, width=4, **options)


def test_dropout_and_drop_path_change_nothing_in_evaluation_and_add_no_parameters():
    x = random_images(3, 8, seed=1)
    plain, regularised = _small_resnet18(), _small_resnet18(dropout=0.5, drop_path=0.3)
    variables = random_variables(plain, x)
    assert jax.tree.structure(regularised.init(jax.random.key(0), x)) == jax.tree.structure(variables)
    np.testing.assert_array_equal(regularised.apply(variables, x), plain.apply(variables, x))


def test_drop_path_rates_grow_linearly_to_the_last_block(monkeypatch):
    """Block b of B gets drop_path·b/(B−1) (Huang et al.'s linear rule): the first none, the last drop_path."""
    rates = []

    def recording(branch, rate, key=None, train=True):
        rates.append(rate)
        return branch

    monkeypatch.setattr(resnet, "drop_path", recording)
    model = _small_resnet18(drop_path=0.35)
    x = random_images(2, 8, seed=2)
    model.apply(random_variables(model, x), x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
    np.testing.assert_allclose(rates, [0.35 * block / 7 for block in range(1, 8)], rtol=1e-12)


def _training_pass(model, count: int, seed: int, key: int):
    """Variables, logits and the captured intermediates of one training pass on `count` random images."""
    x = random_images(count, 8, seed=seed)
    variables = random_variables(model, x)
    logits, state = model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"],
                                rngs={"dropout": jax.random.key(key)}, capture_intermediates=True)
    return variables, logits, state["intermediates"]


def test_drop_path_drops_each_examples_branch_or_scales_it_by_one_over_keep():
    """In training, the last block's output is relu(x + F(x)/(1 − p)) or relu(x) per example, both
    occurring: the branch F(x) and the block input read from the captured intermediates."""
    _, _, captured = _training_pass(_small_resnet18(drop_path=0.5), 16, seed=3, key=4)
    rate = 0.5  # layer4_1, the last block (identity shortcut)
    first = captured["layer4_0"]["__call__"][0]
    branch = captured["layer4_1"]["bn2"]["__call__"][0]
    output = captured["layer4_1"]["__call__"][0]
    kept = jax.nn.relu(first + branch / (1 - rate))
    dropped = jax.nn.relu(first)
    is_kept = [bool(np.allclose(output[n], kept[n], rtol=1e-5, atol=1e-6)) for n in range(16)]
    is_dropped = [bool(np.allclose(output[n], dropped[n], rtol=1e-5, atol=1e-6)) for n in range(16)]
    assert all(k != d for k, d in zip(is_kept, is_dropped)), (is_kept, is_dropped)
    assert 0 < sum(is_dropped) < 16


def test_dropout_before_the_head_zeroes_or_scales_each_pooled_feature():
    variables, logits, captured = _training_pass(_small_resnet18(dropout=0.5), 4, seed=6, key=7)
    features = np.asarray(captured["layer4_1"]["__call__"][0]).mean(axis=(1, 2))
    dropped = np.asarray(captured["Dropout_0"]["__call__"][0])
    zero = dropped == 0
    assert 0 < zero.mean() < 1
    np.testing.assert_allclose(dropped[~zero], 2 * features[~zero], rtol=1e-5, atol=1e-6)
    head = variables["params"]["head"]
    np.testing.assert_allclose(logits, dropped @ np.asarray(head["kernel"]) + np.asarray(head["bias"]), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("options", [{"dropout": 1.0}, {"drop_path": -0.1}, {"dropout": True}])
def test_dropout_and_drop_path_outside_zero_to_one_are_user_errors(options):
    with pytest.raises(UserError, match="must be a probability in \\[0, 1\\)"):
        get_model("resnet18", **options)
