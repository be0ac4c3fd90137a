"""Split-brain autoencoder: the targets equal a float64 recomputation through scikit-image's rgb2lab,
each network's loss and the update equal a float64 recomputation with an independently written
decoder, the full step is the step on the images tinted with the documented per-example hues, the
representation is the two encoders' features concatenated, the networks share no gradient, and bad
settings are one-line UserErrors."""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import skimage.color

from tests.ssl.tiny import TinyEncoder, float64_state
from visionax import models
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.models.common import pool_feature_map
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl.pretext import split_brain
from visionax.train.state import create_train_state

# 4×4 predictions of 2×2 blocks of 8×8 images, decoded from MapEncoder's 2×2 map: 2×2 predictions per cell
SETTINGS = split_brain.SplitBrainSettings(lightness_bins=20, ab_grid_size=20.0, ab_range=110.0, head_hidden_dim=3,
                                          prediction_size=4)


def numpy_targets(lab, settings):
    """float64 NumPy: (a*b* cell index, L* bin) of the mean of every block of `lab` `[n, h, w, 3]` on the
    P × P grid (P = prediction_size) and each block's distance (in L*a*b* units) to the nearest bin edge
    of either, where float32 and float64 may disagree."""
    rows, columns = lab.shape[1] // settings.prediction_size, lab.shape[2] // settings.prediction_size
    lab = np.stack([np.stack([lab[:, row:row + rows, column:column + columns].mean(axis=(1, 2))
                              for column in range(0, lab.shape[2], columns)], axis=1)
                    for row in range(0, lab.shape[1], rows)], axis=1)
    lightness_position = lab[..., 0] * settings.lightness_bins / 100
    lightness = np.clip(np.floor(lightness_position), 0, settings.lightness_bins - 1)
    cells = round(2 * settings.ab_range / settings.ab_grid_size)
    ab_position = (lab[..., 1:] + settings.ab_range) / settings.ab_grid_size
    cell = np.clip(np.floor(ab_position), 0, cells - 1)
    margin = np.minimum(np.abs(lightness_position - np.round(lightness_position)) * 100 / settings.lightness_bins,
                        np.min(np.abs(ab_position - np.round(ab_position)), axis=-1) * settings.ab_grid_size)
    return cell[..., 0] * cells + cell[..., 1], lightness, margin


def numpy_lab(images, hues):
    """float64 L*a*b* of uint8 `images` `[n, h, w, c]`: scikit-image's rgb2lab of colour images; grey
    ones tinted: L* of (g, g, g), (a*, b*) = 40·g·(cos θ, sin θ)."""
    grey = images.astype(np.float64) / 255
    if images.shape[-1] == 3:
        return skimage.color.rgb2lab(grey)
    lightness = skimage.color.rgb2lab(np.repeat(grey, 3, axis=-1))[..., :1]
    direction = np.stack([np.cos(hues), np.sin(hues)], axis=-1)[:, None, None, :]
    return np.concatenate([lightness, 40.0 * grey * direction], axis=-1)


@pytest.mark.parametrize("settings", [split_brain.SplitBrainSettings(), SETTINGS,
                                      split_brain.SplitBrainSettings(prediction_size=2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_targets_equal_a_float64_scikit_image_recomputation(settings, channels):
    """On 8×16 images (4×4 patches of one random colour each, plus noise): blocks of 1×2 pixels (the
    default 8×8 grid), 2×4 and 4×8."""
    rng = np.random.default_rng(channels)
    patches = np.repeat(np.repeat(rng.integers(0, 256, size=(4, 2, 4, channels)), 4, axis=1), 4, axis=2)
    images = np.clip(patches + rng.integers(-30, 31, size=patches.shape), 0, 255).astype(np.uint8)
    hues = np.array([0.3, 2.0, 3.5, 5.9])
    lab = jax.jit(split_brain.lab_images)(model_input(images), jnp.asarray(hues, jnp.float32))
    expected_lab = numpy_lab(images, hues)
    np.testing.assert_allclose(lab, expected_lab, atol=2e-3)
    ab_targets, lightness_targets = map(np.asarray, split_brain.lab_targets(lab, settings))
    expected_ab, expected_lightness, margin = numpy_targets(expected_lab, settings)
    assert ab_targets.dtype == lightness_targets.dtype == np.int32
    size = settings.prediction_size
    assert ab_targets.shape == lightness_targets.shape == (4, size, size)
    clear = margin > 2e-3  # off a bin edge by more than float32's error
    assert clear.mean() > 0.97
    np.testing.assert_array_equal(ab_targets[clear], expected_ab[clear])
    np.testing.assert_array_equal(lightness_targets[clear], expected_lightness[clear])
    assert len(np.unique(ab_targets)) > 5 and len(np.unique(lightness_targets)) > 5


def test_random_hues_are_each_examples_own_uniform_angle():
    key = jax.random.key(3)
    hues = np.asarray(jax.jit(split_brain.random_hues, static_argnums=2)(key, 5, 4))
    expected = [2 * np.pi * float(jax.random.uniform(jax.random.fold_in(key, 5 + i))) for i in range(4)]
    np.testing.assert_allclose(hues, expected, rtol=1e-6)
    many = np.asarray(split_brain.random_hues(key, 0, 2000))
    assert 0 <= many.min() and many.max() < 2 * np.pi and abs(many.mean() - np.pi) < 0.15


class MapEncoder(nn.Module):
    """A zoo-like encoder at test size: 3×3 convolution with stride 4 (a 2×2 map on 8×8 images),
    BatchNorm synchronised over `bn_axis_name`, ReLU, the map sown and pooled as the zoo's models do
    (`pool_feature_map`)."""

    bn_axis_name: str | None = DATA_AXIS

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.Conv(4, (3, 3), strides=4, use_bias=False)(images)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.bn_axis_name)(x)
        return pool_feature_map(self, nn.relu(x))


def tiny_model(bn_axis_name=DATA_AXIS, dtype=jnp.float32):
    return split_brain.split_brain_model(MapEncoder(bn_axis_name), SETTINGS, (8, 8, 1), dtype=dtype)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 1), dtype=np.uint8)


def run_on_one_device(per_device_step, initial, batch):
    data_parallel = DataParallel(make_mesh(jax.devices()[:1]), "shard_map")
    step = data_parallel.step(per_device_step, donate=False)
    state, metrics = step(data_parallel.put_state(initial), data_parallel.put_batch(batch))
    return jax.device_get(data_parallel.get_state(metrics)), jax.device_get(data_parallel.get_state(state))


def step_on_lab(state, batch):
    return split_brain.train_step_on_lab(state, batch["lab"], SETTINGS)


def reference_logits(params, batch_stats, inputs):
    """(a*b* logits, L* logits) `[n, 4, 4, classes]` and the statistics in float64: each encoder applied
    on its own with BatchNorm over the whole batch, its sown 2×2 map decoded prediction by prediction:
    (y, x) reads cell (y // 2, x // 2) through the slice (y mod 2, x mod 2) of the first kernel
    reshaped [C, 2, 2, D]."""
    encoder = MapEncoder(None)
    outputs, statistics = [], {}
    for name, channels in (("lightness_network", slice(0, 1)), ("colour_network", slice(1, 3))):
        _, updates = encoder.apply({"params": params[name]["encoder"], "batch_stats": batch_stats[name]["encoder"]},
                                   inputs[..., channels], train=True, mutable=["batch_stats", "intermediates"])
        feature_map = updates["intermediates"]["feature_map"][-1]
        upsample, classifier = params[name]["upsample"], params[name]["classifier"]
        kernel = upsample["kernel"].reshape(feature_map.shape[-1], 2, 2, SETTINGS.head_hidden_dim)
        bias = upsample["bias"].reshape(2, 2, SETTINGS.head_hidden_dim)
        rows = np.arange(4)
        cells = feature_map[:, rows // 2][:, :, rows // 2]
        hidden = jnp.einsum("nyxc,cyxd->nyxd", cells, kernel[:, rows % 2][:, :, rows % 2])
        hidden = jax.nn.relu(hidden + bias[rows % 2][:, rows % 2])
        outputs.append(hidden @ classifier["kernel"] + classifier["bias"])
        statistics[name] = {"encoder": updates["batch_stats"]}
    return tuple(outputs), statistics


def numpy_cross_entropy(logits, targets):
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(-1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(-1, keepdims=True))
    return -np.mean(np.take_along_axis(log_probs, targets[..., None], -1)), np.mean(logits.argmax(-1) == targets)


def test_each_networks_loss_and_the_update_equal_a_float64_recomputation(images):
    hues = np.array([0.5, 1.5, 3.0, 6.0])
    lab = numpy_lab(images, hues)
    with jax.enable_x64(True):
        initial = float64_state(tiny_model(dtype=jnp.float64), input_shape=(8, 8, 3))
        metrics, state = run_on_one_device(step_on_lab, initial, {"lab": lab})
        ab_targets, lightness_targets, _ = numpy_targets(lab, SETTINGS)
        ab_targets, lightness_targets = ab_targets.astype(int), lightness_targets.astype(int)
        inputs = lab / 100

        def total_loss(params):
            logits, statistics = reference_logits(params, initial.batch_stats, inputs)
            losses = [-jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(network_logits), targets[..., None], -1))
                      for network_logits, targets in zip(logits, (ab_targets, lightness_targets))]
            return sum(losses), (logits, statistics)

        grads, ((ab_logits, lightness_logits), statistics) = jax.jit(jax.grad(total_loss, has_aux=True))(
            initial.params)
        updates, _ = initial.tx.update(grads, initial.opt_state, initial.params)
        params = jax.tree.map(lambda param, update: param + update, initial.params, updates)
    assert ab_logits.shape == (4, 4, 4, SETTINGS.ab_bins) and lightness_logits.shape == (4, 4, 4, 20)
    ab_loss, ab_accuracy = numpy_cross_entropy(ab_logits, ab_targets)
    lightness_loss, lightness_accuracy = numpy_cross_entropy(lightness_logits, lightness_targets)
    assert metrics["loss"].dtype == np.float64
    np.testing.assert_allclose(metrics["ab_loss"], ab_loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["lightness_loss"], lightness_loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["loss"], ab_loss + lightness_loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["ab_accuracy"], ab_accuracy, rtol=1e-12)
    np.testing.assert_allclose(metrics["lightness_accuracy"], lightness_accuracy, rtol=1e-12)
    chex.assert_trees_all_close(state.params, params, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(state.batch_stats, statistics, rtol=1e-10, atol=1e-14)


def test_the_step_tints_each_grey_image_with_its_own_hue(images, monkeypatch):
    """`train_step` hands `train_step_on_lab` the images tinted with the hues
    2π·U(fold_in(fold_in(rng, step), example index)), recomputed here."""
    initial = create_train_state(jax.random.key(1), tiny_model(), optax.sgd(0.5), (8, 8, 3)).replace(step=3)
    monkeypatch.setattr(split_brain, "train_step_on_lab", lambda state, lab, settings: (state, {"lab": lab}))
    handed, _ = run_on_one_device(functools.partial(split_brain.train_step, settings=SETTINGS), initial,
                                  {"image": images})
    step_key = jax.random.fold_in(initial.rng, 3)
    hues = np.array([2 * np.pi * float(jax.random.uniform(jax.random.fold_in(step_key, i))) for i in range(4)])
    np.testing.assert_allclose(handed["lab"], numpy_lab(images, hues), atol=2e-3)
    assert np.ptp(np.arctan2(handed["lab"][..., 2], handed["lab"][..., 1]).max(axis=(1, 2))) > 0.5


@pytest.mark.parametrize("channels", [1, 3])
def test_the_representation_is_the_two_encoders_features_concatenated(channels):
    images = np.random.default_rng(4).integers(0, 256, size=(5, 8, 8, channels), dtype=np.uint8)
    model = split_brain.split_brain_model(MapEncoder(None), SETTINGS, (8, 8, channels))
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(2), jnp.zeros((1, 8, 8, 3)))
    representation = np.asarray(jax.jit(functools.partial(split_brain.embed, model))(variables, images))
    inputs = numpy_lab(images, np.full(5, split_brain.EVALUATION_HUE)) / 100
    encoder = MapEncoder(None)
    halves = [np.asarray(encoder.apply({"params": variables["params"][name]["encoder"],
                                        "batch_stats": variables["batch_stats"][name]["encoder"]},
                                       inputs[..., channels_of].astype(np.float32)))
              for name, channels_of in (("lightness_network", slice(0, 1)), ("colour_network", slice(1, 3)))]
    assert representation.shape == (5, 8) and halves[0].shape == (5, 4)
    np.testing.assert_allclose(representation, np.concatenate(halves, axis=1), rtol=1e-4, atol=1e-5)
    assert not np.allclose(halves[0], halves[1], atol=1e-3)


def test_the_two_networks_share_no_gradient(images):
    """F1's loss has a zero gradient for every parameter of F2 and a nonzero one for F1's, and the reverse."""
    model = tiny_model(None)
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    lab = split_brain.lab_images(model_input(images), jnp.array([0.5, 1.5, 3.0, 6.0]))
    ab_targets, lightness_targets = split_brain.lab_targets(lab, SETTINGS)

    def losses(params):
        (ab_logits, lightness_logits), _ = split_brain.split_brain_logits(
            model.apply, {**variables, "params": params}, split_brain.network_input(lab), train=True)
        return (split_brain.pixel_cross_entropy(ab_logits, ab_targets),
                split_brain.pixel_cross_entropy(lightness_logits, lightness_targets))

    jacobian = jax.jit(jax.jacrev(losses))(variables["params"])
    for loss_index, own, other in ((0, "lightness_network", "colour_network"),
                                   (1, "colour_network", "lightness_network")):
        grads = jacobian[loss_index]
        assert all(np.all(leaf == 0) for leaf in jax.tree.leaves(grads[other]))
        assert all(np.any(leaf != 0) for leaf in jax.tree.leaves(grads[own]))


def test_upsampling_is_the_image_over_the_feature_map():
    assert split_brain.upsampling(MapEncoder(None), (8, 8, 1), 8) == (4, 4)
    assert split_brain.upsampling(MapEncoder(None), (8, 8, 1), 4) == (2, 2)
    assert split_brain.upsampling(models.get_model("small_cnn", num_classes=None), (8, 8, 1), 8) == (2, 2)
    resnet = models.get_model("resnet18", num_classes=None, cifar_stem=True, width=2)
    assert split_brain.upsampling(resnet, (8, 8, 2), 8) == (8, 8)  # a 1×1 map
    assert split_brain.upsampling(resnet, (32, 32, 1), 8) == (2, 2)  # a 4×4 map
    assert split_brain.upsampling(resnet, (32, 32, 1), 32) == (8, 8)  # every pixel


@pytest.mark.parametrize("call, message", [
    (lambda: split_brain.upsampling(models.get_model("small_cnn", num_classes=None), (12, 12, 1), 4),
     "decodes its 4×4 predictions from the encoder's 6×6 feature map, which does not divide them"),
    (lambda: split_brain.upsampling(MapEncoder(None), (8, 8, 1), 3), "a 3×3 grid of predictions does not divide"),
    (lambda: split_brain.upsampling(TinyEncoder(None), (8, 8, 1), 8), "TinyEncoder has no spatial feature map"),
    (lambda: split_brain.check_channels((8, 8, 2)), "needs RGB .3 channels. or grayscale .1 channel. images"),
    (lambda: split_brain.half_width("resnet18", {"width": 15}), r"model_options.width=15 must be even"),
    (lambda: split_brain.half_width("small_cnn", {"widths": (8, 3)}), r"model_options.widths=\(8, 3\) must be even"),
    (lambda: split_brain.half_width("vgg16", {}), "vgg16 has neither"),
    (lambda: split_brain.SplitBrainSettings(lightness_bins=1), "lightness_bins=1 must be an integer >= 2"),
    (lambda: split_brain.SplitBrainSettings(ab_grid_size=7.0), "is not a whole number of cells of grid_size=7.0"),
    (lambda: split_brain.SplitBrainSettings(head_hidden_dim=0), "head_hidden_dim=0 must be >= 1"),
    (lambda: split_brain.SplitBrainSettings(prediction_size=0), "prediction_size=0 must be an integer >= 1"),
])
def test_bad_input_is_a_one_line_user_error(call, message):
    with pytest.raises(UserError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_half_width_halves_the_channels():
    assert split_brain.half_width("resnet18", {"width": 16, "cifar_stem": True}) == {"width": 8}
    assert split_brain.half_width("small_cnn", {"widths": (8, 16, 32)}) == {"widths": (4, 8, 16)}
    assert SETTINGS.ab_bins == 121 and split_brain.SplitBrainSettings().ab_bins == 484
