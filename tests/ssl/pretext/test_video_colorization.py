"""Colourisation as tracking: the attention, the colour prediction and the loss against float64 NumPy
loops (and the loss's gradient against finite differences), the grey input and colour classes against
scikit-image, mask propagation (nearest grey pixel, a known permutation), IoU on hand-computed
cases, the step against a float64 recomputation, and 8 devices (shard_map and pmap) equal to 1."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import skimage.color

from tests.ssl.pretext.checks import assert_eight_devices_equal_one
from visionax.data import video
from visionax.errors import UserError
from visionax.gradcheck import assert_grad_close
from visionax.parallel import DataParallel, make_mesh
from visionax.ssl.pretext import video_colorization as colorization
from visionax.train.state import create_train_state

SETTINGS = colorization.ColorizationSettings(widths=(4, 4), dilations=(1, 2), stride=2, feature_dim=3,
                                             temperature=0.7, grid_size=20, ab_range=110)


def softmax_over_references(logits):
    """Column-wise softmax of `[n, m]` logits in float64, term by term."""
    expected = np.zeros_like(logits)
    for j in range(logits.shape[1]):
        column = np.exp(logits[:, j] - logits[:, j].max())
        expected[:, j] = column / column.sum()
    return expected


def attention_loop(reference, target, temperature):
    """A_ij = exp(f_i·g_j/τ) / Σ_k exp(f_k·g_j/τ), a loop in float64."""
    n, m = len(reference), len(target)
    logits = np.array([[float(np.dot(reference[i], target[j])) / temperature for j in range(m)] for i in range(n)])
    return softmax_over_references(logits)


def test_attention_and_predicted_colours_equal_float64_loops():
    rng = np.random.default_rng(0)
    reference, target = rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 5, 3))
    colors = rng.dirichlet(np.ones(4), size=(2, 6))
    with jax.enable_x64(True):
        weights = np.asarray(colorization.attention(reference, target, 0.7))
        predicted = np.asarray(colorization.predict_colors(weights, colors))
    for b in range(2):
        expected = attention_loop(reference[b], target[b], 0.7)
        np.testing.assert_allclose(weights[b], expected, rtol=1e-12)
        for j in range(5):
            expected_color = sum(expected[i, j] * colors[b, i] for i in range(6))
            np.testing.assert_allclose(predicted[b, j], expected_color, rtol=1e-12)
    np.testing.assert_allclose(weights.sum(axis=1), 1, rtol=1e-12)


def loss_loop(reference, target, reference_colors, target_colors, temperature, classes=6):
    """(−(1/|J|) Σ_{j ∈ J} log y_j[q_j], |J|) with y_j = Σ_i A_ij onehot(c_i), looped in float64
    over leading index b and target position j; J: the targets whose class the reference holds."""
    total, count = 0.0, 0
    for b in range(len(reference)):
        weights = attention_loop(reference[b], target[b], temperature)
        one_hot = np.eye(classes)[reference_colors[b]]
        for j in range(target.shape[1]):
            if target_colors[b, j] in reference_colors[b]:
                predicted = sum(weights[i, j] * one_hot[i] for i in range(len(one_hot)))
                total -= np.log(predicted[target_colors[b, j]])
                count += 1
    return total / count, count


@pytest.fixture(scope="module")
def loss_case():
    rng = np.random.default_rng(1)
    reference, target = rng.normal(size=(3, 7, 4)), rng.normal(size=(3, 6, 4))
    reference_colors = rng.integers(0, 4, size=(3, 7))
    target_colors = rng.integers(0, 6, size=(3, 6))  # classes 4 and 5 never occur in a reference
    assert (target_colors >= 4).sum() >= 3
    return reference, target, reference_colors, target_colors


def test_the_loss_equals_the_cross_entropy_of_the_predicted_colours_over_matched_targets(loss_case):
    with jax.enable_x64(True):
        loss, count = colorization.colorization_loss(*loss_case, temperature=0.7)
    expected_loss, expected_count = loss_loop(*loss_case, temperature=0.7)
    assert int(count) == expected_count < loss_case[3].size
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-12)


def test_the_loss_gradient_equals_finite_differences_and_ignores_unmatched_targets(loss_case):
    reference, target, reference_colors, target_colors = loss_case

    def loss_of(features):
        return colorization.colorization_loss(features[0], features[1], reference_colors, target_colors, 0.7)[0]

    assert_grad_close(loss_of, (reference, target), tol=1e-7)
    with jax.enable_x64(True):
        gradient = np.asarray(jax.grad(loss_of)((reference, target))[1])
    unmatched = ~(target_colors[:, :, None] == reference_colors[:, None, :]).any(-1)
    assert np.isfinite(gradient).all() and np.all(gradient[unmatched] == 0) and np.abs(gradient[~unmatched]).min() > 0


def test_grey_input_and_colour_classes_equal_scikit_images_lab_pooled_and_quantised():
    frames = np.random.default_rng(2).integers(0, 256, size=(2, 3, 4, 6, 3), dtype=np.uint8)
    lightness, classes = map(np.asarray, colorization.lightness_and_colors(frames, SETTINGS))
    lab = skimage.color.rgb2lab(frames / 255.0)
    np.testing.assert_allclose(lightness[..., 0], lab[..., 0] / 100, atol=2e-5)
    ab = lab[..., 1:].reshape(2, 3, 2, 2, 3, 2, 2).mean(axis=(3, 5))  # 2×2 blocks
    cells = np.clip(np.floor((ab + 110) / 20), 0, 10).astype(int)  # 11 cells of 20 units
    near_edge = np.abs((ab + 110) / 20 - np.round((ab + 110) / 20)).min(-1) < 1e-3
    expected = cells[..., 0] * 11 + cells[..., 1]
    np.testing.assert_array_equal(classes[~near_edge], expected[~near_edge])
    assert classes.shape == (2, 3, 2, 3) and len(np.unique(classes)) > 10


def test_grey_pixel_attention_is_a_softmax_of_minus_squared_grey_differences():
    frames = np.random.default_rng(3).integers(0, 256, size=(2, 4, 4, 3), dtype=np.uint8)
    reference, target = colorization.grey_pixel_features(frames, 2)
    grey = skimage.color.rgb2lab(frames / 255.0)[..., 0].reshape(2, 2, 2, 2, 2).mean(axis=(2, 4)).reshape(2, 4) / 100
    weights = np.asarray(colorization.attention(reference[0], target[1], 0.01))
    expected = softmax_over_references(-(grey[0][:, None] - grey[1][None, :]) ** 2 / (2 * 0.01))
    np.testing.assert_allclose(weights, expected, rtol=1e-4, atol=1e-6)


def test_propagation_with_grey_features_copies_the_label_of_the_nearest_grey_pixel_frame_to_frame():
    """At stride 1 and a tiny τ, the propagation with f = (l, −l²/2), g = (l, 1) (`grey_pixel_features`'
    features of given grey levels) gives every pixel of frame t the label that the pixel of frame t − 1
    closest to it in grey received (frame 0: the given mask)."""
    rng = np.random.default_rng(4)
    grey = rng.uniform(size=(3, 25))  # frames 0, 1, 2 of 5×5 pixels, no ties
    first_mask = rng.integers(0, 3, size=(5, 5))
    reference = np.stack([grey[:2], -grey[:2] ** 2 / 2], axis=-1)  # frames 0, 1
    target = np.stack([grey[1:], np.ones_like(grey[1:])], axis=-1)  # frames 1, 2
    with jax.enable_x64(True):
        predicted = np.asarray(colorization.propagate_masks(reference, target, first_mask, num_labels=3,
                                                            temperature=1e-6, stride=1))
    labels = first_mask.ravel()
    for t in (1, 2):
        labels = labels[np.abs(grey[t][:, None] - grey[t - 1][None, :]).argmin(axis=1)]
        np.testing.assert_array_equal(predicted[t - 1], labels.reshape(5, 5))


def test_propagation_with_features_that_follow_a_known_motion_moves_the_mask_exactly():
    """Frame t shows frame 0's 2×2 blocks rolled by (t, 2t) blocks; with the features of every frame
    equal to the codes of the blocks its positions came from, the propagated masks (stride 2, bilinear
    upsampling, carried frame to frame) are frame 0's mask rolled by the same motion, pixel for pixel."""
    blocks = np.random.default_rng(5).integers(0, 4, size=(4, 4))
    first_mask = np.kron(blocks, np.ones((2, 2), int))  # [8, 8]: labels constant on 2×2 blocks
    codes = 10.0 * np.eye(16)  # frame 0's features: one code per block position
    grid = np.arange(16).reshape(4, 4)
    features = codes[np.stack([np.roll(grid, (t, 2 * t), axis=(0, 1)).ravel() for t in range(3)])]  # [3, 16, 16]
    predicted = np.asarray(colorization.propagate_masks(features[:-1], features[1:], first_mask, num_labels=4,
                                                        temperature=1.0, stride=2))
    for t in (1, 2):
        np.testing.assert_array_equal(predicted[t - 1], np.roll(first_mask, (2 * t, 4 * t), axis=(0, 1)))


def test_iou_of_hand_computed_masks():
    predicted = np.array([[[1, 1, 0], [2, 2, 0]], [[0, 0, 0], [3, 3, 0]]])
    masks = np.array([[[1, 0, 0], [2, 2, 2]], [[1, 0, 0], [3, 0, 0]]])
    ious = colorization.object_ious(predicted, masks, 3)
    # frame 0: object 1 ∩ 1 px, ∪ 2 px; object 2 ∩ 2, ∪ 3; object 3 absent from both
    # frame 1: object 1 only in the mask (IoU 0); object 2 absent; object 3 ∩ 1, ∪ 2
    expected = np.array([[1 / 2, 2 / 3, np.nan], [0.0, np.nan, 1 / 2]])
    np.testing.assert_allclose(ious, expected)
    assert colorization.mean_iou(predicted, masks, 3) == pytest.approx((1 / 2 + 2 / 3 + 0 + 1 / 2) / 4)
    assert colorization.mean_iou(masks, masks, 3) == 1.0


@pytest.mark.parametrize("change, message", [
    ({"widths": (4,), "dilations": (1, 2)}, "must be equally long lists of positive integers"),
    ({"stride": 3}, "stride=3 must be 1 or 2"),
    ({"temperature": 0.0}, "temperature=0.0 must be positive"),
    ({"grid_size": 7.0}, "grid_size=7.0 must divide 2 \\* ab_range = 220"),
])
def test_bad_settings_are_one_line_user_errors(change, message):
    with pytest.raises(UserError, match=message) as error:
        colorization.ColorizationSettings(**change)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="frames of 9×8 do not split into 2×2 blocks"):
        colorization.ColorizationSettings().check_frame_size(9, 8)


@pytest.fixture(scope="module")
def videos():
    settings = video.VideoSettings(frames=3, height=8, width=8, objects=2, min_size=2, max_size=4, max_speed=1)
    return video.moving_objects(16, settings, seed=0)["frames"]


def float64_state():
    """The step-0 state of SETTINGS' encoder (SGD momentum 0.9 at 0.5) with float64 parameters."""
    model = colorization.frame_encoder(SETTINGS, dtype=jnp.float64)
    state = create_train_state(jax.random.key(0), model, optax.sgd(0.5, momentum=0.9), (8, 8, 1))
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), state.params)
    return state.replace(params=params, opt_state=state.tx.init(params))


def run_steps(devices, impl, videos, steps=2):
    """`steps` steps on the first `devices` devices in float64: (metrics of each step, the state after
    each step, the initial state)."""
    data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), impl)
    step = data_parallel.step(functools.partial(colorization.train_step, settings=SETTINGS), donate=False)
    initial = float64_state()
    state, history, states = data_parallel.put_state(initial), [], []
    batch = {"image": videos, "label": np.zeros(len(videos), np.int32)}
    for _ in range(steps):
        state, metrics = step(state, data_parallel.put_batch(batch))
        history.append(jax.device_get(data_parallel.get_state(metrics)))
        states.append(jax.device_get(data_parallel.get_state(state)))
    return history, states, jax.device_get(initial)


@pytest.fixture(scope="module")
def one_device(videos):
    with jax.enable_x64(True):
        return run_steps(1, "shard_map", videos)


def test_the_step_equals_a_float64_recomputation_of_loss_and_update(videos, one_device):
    (metrics, _), (state, _), initial = one_device
    with jax.enable_x64(True):
        lightness, classes = map(np.asarray, jax.jit(colorization.lightness_and_colors, static_argnums=1)(
            videos, SETTINGS))
        classes = classes.reshape(16, 3, -1)

        def features_of(params):
            maps = initial.apply_fn({"params": params}, jnp.asarray(lightness.reshape(-1, 8, 8, 1), jnp.float64))
            return maps.reshape(16, 3, 16, 3)

        @jax.jit
        def one_hot_cross_entropy(params):  # y = A·onehot(c), −log y[q], over the matched targets
            features = features_of(params)
            logits = jnp.einsum("btid,btjd->btij", features[:, :-1], features[:, 1:]) / 0.7
            predicted = jnp.einsum("btij,btic->btjc", jax.nn.softmax(logits, axis=-2),
                                   jax.nn.one_hot(classes[:, :-1], 121))
            matched = (classes[:, 1:, :, None] == classes[:, :-1, None, :]).any(-1)
            chosen = jnp.take_along_axis(predicted, classes[:, 1:, :, None], axis=-1)[..., 0]
            return -jnp.sum(jnp.where(matched, jnp.log(jnp.where(matched, chosen, 1.0)), 0.0)) / matched.sum()

        features = np.asarray(jax.jit(features_of)(initial.params))  # frame t − 1 the reference of frame t
        loss, count = loss_loop(features[:, :-1].reshape(32, 16, 3), features[:, 1:].reshape(32, 16, 3),
                                classes[:, :-1].reshape(32, 16), classes[:, 1:].reshape(32, 16), 0.7, classes=121)
        grads = jax.grad(one_hot_cross_entropy)(initial.params)
        updates, _ = initial.tx.update(grads, initial.opt_state, initial.params)
        params = jax.device_get(optax.apply_updates(initial.params, updates))
    assert metrics["loss"].dtype == np.float64
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["positions_used"], count / 512, rtol=1e-12)
    assert 0.5 < count / 512 < 1
    chex.assert_trees_all_close(state.params, params, rtol=1e-10, atol=1e-14)
    assert int(state.step) == 1


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_equal_one_device(videos, one_device, impl):
    """8 devices, 2 different videos each (a different count of matched targets on each), equal 1 device on all 16."""
    with jax.enable_x64(True):
        history, states, _ = run_steps(8, impl, videos)
    expected_history, expected_states, initial = one_device
    assert_eight_devices_equal_one(history, states[-1], (expected_history, expected_states[-1], initial),
                                   "positions_used")
