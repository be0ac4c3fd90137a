"""The captioning step: its loss is the temporal softmax loss of the composed encoder, positions
and decoder; the same steps on 8 devices as on 1 (synchronised BatchNorm), under shard_map and
pmap; DETR's grid of sinusoids; caption records read by the shared batch pipeline."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax import parallel
from visionax.data.captions import NULL, digit_vocabulary
from visionax.data.pipeline import Batches
from visionax.losses.sequence import temporal_softmax_loss
from visionax.models import captioners, get_model
from visionax.train import captioning

V = digit_vocabulary().size


def problem(batch=16):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, 8, 12, 1), dtype=np.uint8)
    lengths = rng.integers(1, 5, batch)
    captions = np.zeros((batch, 6), np.int32)
    for n, length in enumerate(lengths):
        captions[n, :length + 2] = [1, *rng.integers(4, V, length), 2]
    encoder = get_model("small_cnn", num_classes=None, widths=(4, 6), bn_axis_name=parallel.DATA_AXIS)
    decoder = captioners.AttentionLSTMCaptioner(V, 6, wordvec_dim=5, hidden_dim=7)
    captioner = captioning.Captioner(encoder, decoder)
    state = captioning.create_state(jax.random.key(0), captioner, optax.adam(0.01), images, captions)
    return captioner, state, images, captions


def test_grid_encoding_is_row_then_column_sinusoids():
    encoding = np.asarray(captioning.grid_encoding(3, 5, 8))
    row, column = np.arange(3)[:, None, None], np.arange(5)[None, :, None]
    frequency = 10000.0 ** (-np.arange(0, 4, 2) / 4)
    np.testing.assert_allclose(encoding[..., 0:4:2], np.broadcast_to(np.sin(row * frequency), (3, 5, 2)), atol=1e-6)
    np.testing.assert_allclose(encoding[..., 1:4:2], np.broadcast_to(np.cos(row * frequency), (3, 5, 2)), atol=1e-6)
    np.testing.assert_allclose(encoding[..., 4::2], np.broadcast_to(np.sin(column * frequency), (3, 5, 2)), atol=1e-6)
    np.testing.assert_allclose(encoding[..., 5::2], np.broadcast_to(np.cos(column * frequency), (3, 5, 2)), atol=1e-6)


def test_caption_source_pairs_captions_with_their_images():
    images = np.arange(3 * 2 * 2 * 1, dtype=np.uint8).reshape(3, 2, 2, 1)
    captions = np.arange(4 * 6, dtype=np.int32).reshape(4, 6)
    source = captioning.CaptionSource(images, captions, np.array([2, 0, 0, 1]))
    batch = Batches(source, batch_size=4, seed=0).host_batch(0)
    order = Batches(source, batch_size=4, seed=0).indices(0)
    np.testing.assert_array_equal(batch["label"], captions[order])
    np.testing.assert_array_equal(batch["image"], images[np.array([2, 0, 0, 1])[order]])


def test_the_step_minimises_the_temporal_softmax_loss_of_the_composition():
    captioner, state, images, captions = problem()
    data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:1]), "shard_map")
    step = data_parallel.step(lambda s, b: captioning.train_step(s, b, captioner=captioner), donate=False)
    _, metrics = step(data_parallel.put_state(state), data_parallel.put_batch({"image": images, "label": captions}))

    # the same loss written out: encoder (batch statistics of the batch), + positions, decoder
    variables = {"params": state.params["encoder"], "batch_stats": state.batch_stats}
    encoder = get_model("small_cnn", num_classes=None, widths=(4, 6))
    _, updates = encoder.apply(variables, images.astype(np.float32) / 255, train=True,
                               mutable=["batch_stats", "intermediates"])
    feature_map = updates["intermediates"]["feature_map"][0] + state.params["positions"]
    logits = captioner.decoder.apply({"params": state.params["decoder"]}, feature_map, jnp.asarray(captions[:, :-1]))
    targets = captions[:, 1:]
    expected = temporal_softmax_loss(logits, jnp.asarray(targets), jnp.asarray(targets != NULL))
    metrics = jax.device_get(data_parallel.get_state(metrics))
    np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5)
    mask = targets != NULL
    np.testing.assert_allclose(metrics["word_loss"], float(expected) * len(captions) / mask.sum(), rtol=1e-5)
    correct = (np.asarray(logits).argmax(-1) == targets) & mask
    np.testing.assert_allclose(metrics["word_accuracy"], correct.sum() / mask.sum(), rtol=1e-6)


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_eight_devices_take_the_steps_of_one(impl):
    captioner, state, images, captions = problem()

    def run(devices):
        data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]), impl)
        step = data_parallel.step(lambda s, b: captioning.train_step(s, b, captioner=captioner), donate=False)
        placed, losses = data_parallel.put_state(state), []
        for index in range(3):
            chosen = np.roll(np.arange(len(images)), index)
            placed, metrics = step(placed, data_parallel.put_batch({"image": images[chosen], "label": captions[chosen]}))
            losses.append(float(np.ravel(jax.device_get(data_parallel.get_state(metrics))["loss"])[0]))
        return np.array(losses), jax.device_get(data_parallel.get_state(placed))

    (losses_eight, eight), (losses_one, one) = run(8), run(1)
    np.testing.assert_allclose(losses_eight, losses_one, rtol=1e-5)
    assert losses_one[2] < losses_one[0]
    # Adam's m/√v magnifies the summation-order difference of a near-zero gradient: 1e-4 is 1% of
    # one step of the learning rate 0.01 (a gradient left unaveraged moves parameters by whole steps)
    for field in ("params", "batch_stats", "opt_state"):
        chex.assert_trees_all_close(getattr(eight, field), getattr(one, field), rtol=2e-4, atol=1e-4)
    assert np.abs(np.asarray(one.params["positions"]) - np.asarray(state.params["positions"])).max() > 0
