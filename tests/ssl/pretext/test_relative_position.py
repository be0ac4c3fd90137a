"""Relative patch position: patches equal NumPy slices at the layout's corners, label k is the k-th
neighbour in row-major order, the gap and jitter stay in bounds and the labels are uniform, colour
dropping keeps exactly one channel, the step equals a float64 recomputation (encoder and head applied
separately), and 8 devices (shard_map and pmap) equal 1.

Steps run in float64 (as rotation's test): float32 agrees only to about 1e-5 of an update (the
summation order of the synchronised BatchNorm), float64 to about 1e-15.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.ssl.pretext.checks import assert_eight_devices_equal_one
from tests.ssl.tiny import TinyEncoder, float64_state
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl.pretext import relative_position as rp

SETTINGS = rp.RelativePositionSettings(patch_size=2, gap=1, jitter=1, head_layers=2, head_hidden_dim=8)


def test_extract_patch_equals_numpy_slicing():
    image = np.random.default_rng(0).normal(size=(9, 11, 3)).astype(np.float32)
    extract = jax.jit(rp.extract_patch, static_argnums=2)
    for row, column, size in [(0, 0, 3), (6, 8, 3), (2, 5, 4), (4, 1, 1), (0, 7, 2)]:
        np.testing.assert_array_equal(extract(image, jnp.array([row, column]), size),
                                      image[row:row + size, column:column + size])


def test_label_order_is_row_major_skipping_the_centre():
    assert rp.NEIGHBOUR_OFFSETS == tuple((row - 1, column - 1) for row in range(3) for column in range(3)
                                         if (row, column) != (1, 1))
    assert rp.NUM_POSITIONS == 8


def cell_image(settings, size):
    """An image `[size, size, 1]` whose pixels in grid cell (r, c) of a grid at corner 0 hold 3r + c,
    −1 elsewhere."""
    image = -np.ones((size, size, 1))
    for row in range(3):
        for column in range(3):
            top, left = row * settings.pitch, column * settings.pitch
            image[top:top + settings.patch_size, left:left + settings.patch_size] = 3 * row + column
    return image


def test_label_k_is_the_kth_neighbour_and_patches_are_slices_at_the_layouts_corners():
    """On the digits' layout (2×2 patches, gap 1, no jitter: the grid fills 8×8), the centre patch
    is cell 4 and the neighbour of label k is cell k (k < 4) or k + 1, as row-major order says."""
    settings = rp.RelativePositionSettings(patch_size=2, gap=1, jitter=0, colour_dropping=False)
    image = cell_image(settings, 8)
    pair_of = jax.jit(lambda key: rp.patch_pair(key, image, settings))
    seen = set()
    for seed in range(64):
        key = jax.random.key(seed)
        pair, label = map(np.asarray, pair_of(key))
        label = int(label)
        seen.add(label)
        np.testing.assert_array_equal(pair[0], 4)
        np.testing.assert_array_equal(pair[1], label if label < 4 else label + 1)
        centre, neighbour, layout_label = map(np.asarray, rp.patch_layout(jax.random.split(key, 3)[0],
                                                                          image.shape, settings))
        assert int(layout_label) == label
        np.testing.assert_array_equal(neighbour - centre, np.array(rp.NEIGHBOUR_OFFSETS[label]) * settings.pitch)
        for patch, (row, column) in zip(pair, (centre, neighbour)):
            np.testing.assert_array_equal(patch, image[row:row + 2, column:column + 2])
    assert seen == set(range(8))


def test_pairs_with_jitter_are_numpy_slices_at_the_layouts_corners():
    settings = rp.RelativePositionSettings(patch_size=3, gap=2, jitter=2, colour_dropping=False)
    images = np.random.default_rng(1).normal(size=(32, 21, 23, 2)).astype(np.float32)
    key = jax.random.key(3)
    pairs, labels = map(np.asarray, jax.jit(lambda: rp.patch_pairs(key, images, settings, 5))())
    for index, image in enumerate(images):
        layout_key = jax.random.split(jax.random.fold_in(key, 5 + index), 3)[0]
        centre, neighbour, label = map(np.asarray, rp.patch_layout(layout_key, image.shape, settings))
        assert labels[index] == label
        for patch, (row, column) in zip(pairs[index], (centre, neighbour)):
            np.testing.assert_array_equal(patch, image[row:row + 3, column:column + 3])


def test_gap_and_jitter_stay_in_bounds_and_every_label_has_frequency_one_eighth():
    """5σ bounds on the label counts of 8,000 layouts; the gap along the axis that separates the
    patches is in [gap, gap + 2·jitter] (both ends reached), across it the patches are offset by at
    most jitter, and every patch lies inside the image."""
    settings = rp.RelativePositionSettings(patch_size=3, gap=2, jitter=2)
    height, width = 20, 22  # extent 3·3 + 2·2 + 3·2 = 19: the grid moves by 0..1 and 0..3
    count = 8000
    keys = jax.random.split(jax.random.key(0), count)
    centre, neighbour, labels = map(np.asarray, jax.jit(jax.vmap(
        lambda key: rp.patch_layout(key, (height, width, 3), settings)))(keys))
    frequencies = np.bincount(labels, minlength=8)
    sigma = np.sqrt(count * (1 / 8) * (7 / 8))
    assert np.all(np.abs(frequencies - count / 8) < 5 * sigma), frequencies
    for corners in (centre, neighbour):
        assert corners.min() >= 0
        assert np.all(corners[:, 0] <= height - 3) and np.all(corners[:, 1] <= width - 3)
    offsets = np.array(rp.NEIGHBOUR_OFFSETS)[labels]
    difference = neighbour - centre
    for axis in (0, 1):
        apart = offsets[:, axis] != 0
        gaps = np.abs(difference[apart, axis]) - settings.patch_size
        assert gaps.min() == settings.gap and gaps.max() == settings.gap + 2 * settings.jitter
        assert np.all(np.sign(difference[apart, axis]) == offsets[apart, axis])
        across = np.abs(difference[~apart, axis])
        assert across.max() == settings.jitter
        # the centre is at grid + pitch + jitter: the grid's room and the jitter, each value reached
        room = (height, width)[axis] - settings.extent
        assert set(centre[:, axis] - settings.pitch) == set(range(room + settings.jitter + 1))


def test_colour_dropping_keeps_exactly_one_random_channel_of_rgb_patches():
    patch = np.random.default_rng(2).uniform(size=(4, 4, 3)).astype(np.float32)
    drop = jax.jit(lambda key: rp.drop_colours(key, patch, 0.01))
    kept_channels = []
    for seed in range(60):
        dropped = np.asarray(drop(jax.random.key(seed)))
        kept = [channel for channel in range(3) if np.array_equal(dropped[..., channel], patch[..., channel])]
        assert len(kept) == 1
        kept_channels.append(kept[0])
        others = np.delete(dropped, kept[0], axis=-1)
        assert np.all(np.abs(others - 0.5) < 0.05) and others.std() > 0.005
    assert set(kept_channels) == {0, 1, 2}
    grey = np.random.default_rng(3).uniform(size=(4, 4, 1)).astype(np.float32)
    np.testing.assert_array_equal(rp.drop_colours(jax.random.key(0), grey, 0.01), grey)


def test_each_patch_of_a_pair_drops_its_own_colours():
    settings = rp.RelativePositionSettings(patch_size=3, gap=1, jitter=1)
    plain = rp.RelativePositionSettings(patch_size=3, gap=1, jitter=1, colour_dropping=False)
    images = np.random.default_rng(4).uniform(size=(64, 16, 16, 3))
    key = jax.random.key(1)
    pairs = np.asarray(rp.patch_pairs(key, images, settings)[0])
    slices = np.asarray(rp.patch_pairs(key, images, plain)[0])
    same = (pairs == slices).all(axis=(2, 3))  # [batch, 2, 3]: which channels are kept
    np.testing.assert_array_equal(same.sum(-1), 1)
    assert np.any(same[:, 0] != same[:, 1])  # the centre and the neighbour choose independently


@pytest.mark.parametrize("change, message", [
    ({"patch_size": 0}, "patch_size=0 must be >= 1, gap=1 and jitter=0 >= 0"),
    ({"gap": -1}, "patch_size=2 must be >= 1, gap=-1 and jitter=0 >= 0"),
    ({"jitter": -1}, "gap=1 and jitter=-1 >= 0"),
    ({"drop_noise": -0.1}, "drop_noise=-0.1 must be >= 0"),
    ({"head_layers": 0}, "head_layers=0 and head_hidden_dim=128 must be >= 1"),
])
def test_bad_settings_are_one_line_user_errors(change, message):
    with pytest.raises(UserError, match=message) as error:
        rp.RelativePositionSettings(**change)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("settings, shape, message", [
    (dict(patch_size=3, gap=1, jitter=0), (8, 8, 1), r"= 3·3 \+ 2·1 \+ 3·0 = 11 pixels, more than the 8×8 images: "
                                                     r"patch_size <= 2 fits"),
    (dict(patch_size=2, gap=1, jitter=1), (8, 8, 1), r"= 11 pixels.*patch_size <= 1 fits"),
    (dict(patch_size=1, gap=3, jitter=1), (8, 8, 1), "no patch_size fits with this gap and jitter: lower them"),
    (dict(patch_size=11, gap=3, jitter=1), (32, 32, 3), r"= 42 pixels, more than the 32×32 images: patch_size <= 7"),
])
def test_patches_that_do_not_fit_are_a_one_line_user_error_naming_the_sizes_that_fit(settings, shape, message):
    with pytest.raises(UserError, match=message) as error:
        rp.patch_layout(jax.random.key(0), shape, rp.RelativePositionSettings(**settings))
    assert "\n" not in str(error.value)
    rp.RelativePositionSettings(patch_size=2, gap=1, jitter=0).check_fits((8, 8, 1))  # the digits' grid fits


def tiny_model(head_layers=2, bn_axis_name=DATA_AXIS, dtype=jnp.float64):
    settings = rp.RelativePositionSettings(head_layers=head_layers, head_hidden_dim=8)
    return rp.RelativePositionModel(TinyEncoder(bn_axis_name),
                                    rp.position_head(settings, bn_axis_name=bn_axis_name, dtype=dtype))


def test_the_model_classifies_pairs_and_embeds_whole_images():
    model = tiny_model(dtype=jnp.float32)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 2, 3)))
    assert variables["params"]["head"]["Dense_0"]["kernel"].shape == (8, 8)  # [f(centre), f(neighbour)]
    assert variables["params"]["head"]["Dense_1"]["kernel"].shape == (8, 8)  # 8 positions
    images = np.random.default_rng(5).uniform(size=(3, 8, 8, 3))
    features = model.apply(variables, images, method=rp.RelativePositionModel.embed)
    encoder_only = TinyEncoder().apply({"params": variables["params"]["encoder"],
                                        "batch_stats": variables["batch_stats"]["encoder"]}, images)
    np.testing.assert_array_equal(features, encoder_only)
    assert features.shape == (3, 4)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(16, 12, 12, 3), dtype=np.uint8)


def run_step(devices, impl, images, *, head_layers=2, steps=1, settings=SETTINGS):
    """`steps` steps of `relative_position.train_step` on the first `devices` devices in float64:
    (metrics of each step, final state, initial state)."""
    data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
    step = data_parallel.step(functools.partial(rp.train_step, settings=settings), donate=False)
    initial = float64_state(tiny_model(head_layers), (2, 2, 2, images.shape[-1]))
    state, history = data_parallel.put_state(initial), []
    for _ in range(steps):
        state, metrics = step(state, data_parallel.put_batch({"image": images}))
        history.append(jax.device_get(data_parallel.get_state(metrics)))
    return history, jax.device_get(data_parallel.get_state(state)), jax.device_get(initial)


def reference_pairs(initial, images, settings=SETTINGS):
    """Each example's pair and label recomputed on its own from the key fold_in(fold_in(rng, step), i)
    (x / 255 as a compiled step computes it: XLA multiplies by the float32 1/255)."""
    inputs = np.asarray(jax.jit(model_input)(images))
    step_key = jax.random.fold_in(initial.rng, initial.step)
    pair_of = jax.jit(lambda index, image: rp.patch_pair(jax.random.fold_in(step_key, index), image, settings))
    pairs, labels = zip(*(pair_of(index, image) for index, image in enumerate(inputs)))
    return np.stack(pairs).astype(np.float64), np.array(labels)


def reference_update(initial, pairs, labels, head_layers=2):
    """The loss, the accuracy, the parameters and the statistics after one update, recomputed with the
    encoder and the head applied separately: the encoder on all centres then all neighbours (BatchNorm
    over the whole batch, no axis), the head on [f(centres), f(neighbours)], cross-entropy and
    accuracy in float64 NumPy, the optax update of the gradient of the same cross-entropy."""
    settings = rp.RelativePositionSettings(head_layers=head_layers, head_hidden_dim=8)
    encoder, head = TinyEncoder(None), rp.position_head(settings, bn_axis_name=None, dtype=jnp.float64)
    stats, count = initial.batch_stats, len(labels)

    def logits_of(params):
        features, encoder_stats = encoder.apply(
            {"params": params["encoder"], "batch_stats": stats["encoder"]},
            np.concatenate([pairs[:, 0], pairs[:, 1]]), train=True, mutable=["batch_stats"])
        both = jnp.concatenate([features[:count], features[count:]], axis=1)
        logits, head_stats = head.apply({"params": params["head"], "batch_stats": stats.get("head", {})}, both,
                                        train=True, mutable=["batch_stats"])
        return logits, {"encoder": encoder_stats["batch_stats"], **({"head": head_stats["batch_stats"]}
                                                                     if head_layers > 1 else {})}

    logits, batch_stats = logits_of(initial.params)
    logits = np.asarray(logits, np.float64)
    log_probs = logits - logits.max(1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
    loss = -np.mean(log_probs[np.arange(count), labels])
    accuracy = np.mean(np.argmax(logits, 1) == labels)

    def cross_entropy(params):
        return -jnp.mean(jax.nn.log_softmax(logits_of(params)[0])[jnp.arange(count), labels])

    grads = jax.grad(cross_entropy)(initial.params)
    updates, _ = initial.tx.update(grads, initial.opt_state, initial.params)
    return loss, accuracy, optax.apply_updates(initial.params, updates), batch_stats


@pytest.mark.parametrize("head_layers", [1, 2])
def test_step_equals_a_float64_recomputation_of_loss_accuracy_and_update(images, head_layers):
    with jax.enable_x64(True):
        (metrics,), state, initial = run_step(1, "shard_map", images, head_layers=head_layers)
        pairs, labels = reference_pairs(initial, images)
        loss, accuracy, params, batch_stats = reference_update(initial, pairs, labels, head_layers)
    assert len(set(labels.tolist())) > 4
    assert metrics["loss"].dtype == np.float64
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["position_accuracy"], accuracy, rtol=1e-12)
    chex.assert_trees_all_close(state.params, params, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(state.batch_stats, batch_stats, rtol=1e-10, atol=1e-14)
    assert int(state.step) == 1


@pytest.fixture(scope="module")
def one_device(images):
    with jax.enable_x64(True):
        return run_step(1, "shard_map", images, steps=2)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_equal_one_device(images, one_device, impl):
    """8 devices, 2 different images each (pairs, jitter and colour dropping included), equal 1 device on all 16."""
    with jax.enable_x64(True):
        history, state, _ = run_step(8, impl, images, steps=2)
    assert_eight_devices_equal_one(history, state, one_device, "position_accuracy")
