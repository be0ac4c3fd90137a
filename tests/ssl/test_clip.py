"""CLIP: the text tower is causal and read at `<END>`, the captions and prompts are the templates,
the logit scale starts at log(1/0.07) and is clipped at log(100) after the update, recall@k and the
zero-shot classifier equal NumPy, and the step equals a float64 recomputation, on 8 devices as on 1."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.ssl.pretext.checks import assert_eight_devices_equal_one
from tests.ssl.tiny import TinyEncoder, float64_state
from visionax.data.captions import END, NULL, START
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl import clip

CANVAS = (8, 16)
TINY = clip.CLIPSettings(embed_dim=6, text_width=8, text_depth=2, text_heads=2, text_mlp_dim=16)


def tiny_model(bn_axis_name=DATA_AXIS):
    return clip.clip_model(TINY, TinyEncoder(bn_axis_name), CANVAS)


@pytest.fixture(scope="module")
def text_tower():
    model = tiny_model()
    variables = model.init(jax.random.key(1), jnp.zeros((1, *CANVAS, 1)))
    return model, variables


def random_captions(seed, batch, length=clip.CAPTION_LENGTH):
    return np.random.default_rng(seed).integers(4, clip.clip_vocabulary().size, size=(batch, length)).astype(np.int32)


def token_features(model, variables, captions):
    return np.asarray(compiled_token_features(model.text_encoder, variables["params"]["text_encoder"],
                                              jnp.asarray(captions)))


@functools.partial(jax.jit, static_argnums=0)
def compiled_token_features(text_encoder, params, captions):
    return text_encoder.apply({"params": params}, captions, method=clip.TextTransformer.token_features)


def test_text_tower_is_causal_features_up_to_t_ignore_later_tokens(text_tower):
    model, variables = text_tower
    captions = random_captions(0, 3)
    features = token_features(model, variables, captions)
    for t in range(clip.CAPTION_LENGTH - 1):
        changed = captions.copy()
        changed[:, t + 1:] = 4 + (captions[:, t + 1:] - 3) % (clip.clip_vocabulary().size - 4)  # every later word
        features_changed = token_features(model, variables, changed)
        np.testing.assert_allclose(features_changed[:, :t + 1], features[:, :t + 1], rtol=1e-6, atol=1e-6)
        assert np.max(np.abs(features_changed[:, t + 1] - features[:, t + 1])) > 1e-3


def test_text_embedding_is_the_projected_feature_at_the_end_token(text_tower):
    model, variables = text_tower
    captions = random_captions(2, 4)
    ends = [2, 5, 10, 7]
    for row, end in enumerate(ends):
        captions[row, 0], captions[row, end] = START, END
        captions[row, end + 1:] = NULL
    captions[3, 9] = END  # a second END after the first is ignored: [3] is read at 7
    encode = jax.jit(functools.partial(clip.encode_captions, model))
    embeddings = np.asarray(encode(variables, jnp.asarray(captions)))
    features = token_features(model, variables, captions)
    kernel = np.asarray(variables["params"]["text_projection"]["kernel"], np.float64)
    expected = np.stack([features[row, end] @ kernel for row, end in enumerate(ends)])
    np.testing.assert_allclose(embeddings, expected, rtol=1e-5, atol=1e-6)
    # the padding after <END> changes nothing
    padded = captions.copy()
    padded[0, 3:] = random_captions(3, 1)[0, 3:]
    np.testing.assert_allclose(np.asarray(encode(variables, jnp.asarray(padded)))[0],
                               embeddings[0], rtol=1e-6, atol=1e-6)


def test_captions_and_prompts_are_the_templates_over_the_extended_vocabulary():
    vocabulary = clip.clip_vocabulary()
    assert vocabulary.words[4:14] == ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                      "nine")  # the digit vocabulary's ids are kept
    captions = clip.templated_captions(np.array([[3, 1, 4, -1], [7, -1, -1, -1], [0, 9, -1, -1]]), vocabulary)
    assert captions.shape == (3, 4, clip.CAPTION_LENGTH) and captions.dtype == np.int32
    assert [vocabulary.decode(caption) for caption in captions[0]] == [
        "a photo of three one four", "the digits three , one and four", "three one four",
        "a picture of the number three one four"]
    assert vocabulary.decode(captions[1, 1]) == "the digit seven"
    assert vocabulary.decode(captions[2, 1]) == "the digits zero and nine"
    longest = clip.templated_captions(np.array([[1, 2, 3, 4]]), vocabulary)
    assert np.all(np.sum(longest > END, axis=-1) <= clip.CAPTION_LENGTH - 2)
    assert np.max(np.argmax(longest == END, axis=-1)) == clip.CAPTION_LENGTH - 1  # the longest fills the length
    prompts = clip.prompt_captions(vocabulary)
    assert prompts.shape == (10, 3, clip.CAPTION_LENGTH)
    assert [vocabulary.decode(prompt) for prompt in prompts[7]] == [
        "a photo of the digit seven", "the digit seven", "a picture of the number seven"]
    assert not np.any(prompts == 3) and not np.any(captions == 3)  # no <UNK>


def test_each_example_draws_its_template_from_its_global_index():
    key = jax.random.key(3)
    captions = np.arange(8 * 4 * 2).reshape(8, 4, 2)
    chosen = np.asarray(clip.choose_captions(key, jnp.asarray(captions)))
    templates = [int(jax.random.randint(jax.random.fold_in(key, index), (), 0, 4)) for index in range(8)]
    np.testing.assert_array_equal(chosen, captions[np.arange(8), templates])
    assert len(set(templates)) > 1
    # the second half of a batch on a device of its own (first index 4) draws the same templates
    np.testing.assert_array_equal(np.asarray(clip.choose_captions(key, jnp.asarray(captions[4:]), 4)), chosen[4:])


@pytest.fixture(scope="module")
def start():
    """The float64 step-0 state of the tiny model (SGD momentum 0.9 at 0.5)."""
    with jax.enable_x64(True):
        return float64_state(tiny_model(), (*CANVAS, 1))


def test_logit_scale_starts_at_log_1_over_0_07_and_is_clipped_at_log_100(text_tower, start):
    _, variables = text_tower
    assert clip.INITIAL_LOGIT_SCALE == pytest.approx(2.659260036932778)
    assert clip.MAX_LOGIT_SCALE == pytest.approx(4.605170185988092)
    np.testing.assert_allclose(variables["params"]["logit_scale"], np.log(1 / 0.07), rtol=1e-7)
    state = start
    for value, expected in [(5.0, np.log(100)), (4.6, 4.6), (-1.0, -1.0)]:
        clipped = clip.clip_logit_scale(state.replace(params={**state.params, "logit_scale": jnp.asarray(value)}))
        np.testing.assert_allclose(clipped.params["logit_scale"], expected, rtol=1e-7)
        chex.assert_trees_all_equal(clipped.params["text_encoder"], state.params["text_encoder"])


def test_recall_at_k_equals_a_numpy_ranking():
    rng = np.random.default_rng(0)
    similarity = rng.normal(size=(40, 40))
    digit_strings = rng.integers(0, 6, size=40)  # repeated strings: several relevant items per query
    cases = [np.eye(40, dtype=bool), digit_strings[:, None] == digit_strings[None, :]]
    for relevant in cases:
        for k in (1, 5):
            order = np.argsort(-similarity, axis=1)[:, :k]
            expected = np.mean([relevant[row, order[row]].any() for row in range(40)])
            assert float(clip.recall_at_k(similarity, relevant, k)) == pytest.approx(expected)
            expected_transposed = np.mean([relevant.T[row, np.argsort(-similarity.T[row])[:k]].any()
                                           for row in range(40)])
            assert float(clip.recall_at_k(similarity.T, relevant.T, k)) == pytest.approx(expected_transposed)
    hand_made = np.array([[0.9, 0.1, 0.3], [0.5, 0.4, 0.2], [0.9, 0.8, 0.3]])
    identity = np.eye(3, dtype=bool)
    assert float(clip.recall_at_k(hand_made, identity, 1)) == pytest.approx(1 / 3)  # row 0 only
    assert float(clip.recall_at_k(hand_made, identity, 2)) == pytest.approx(2 / 3)  # row 1 too (rank 2)
    assert float(clip.recall_at_k(hand_made, identity, 3)) == 1.0  # row 2's positive ranks third
    # a tie with an irrelevant item counts as a hit (ties favour the relevant)
    assert float(clip.recall_at_k(np.array([[0.5, 0.5]]), np.array([[False, True]]), 1)) == 1.0


def test_zero_shot_classifier_and_predictions_equal_numpy():
    rng = np.random.default_rng(1)
    prompts = rng.normal(size=(10, 3, 6))
    images = rng.normal(size=(50, 6)) * rng.uniform(0.1, 10, size=(50, 1))
    normalised = prompts / np.linalg.norm(prompts, axis=-1, keepdims=True)
    classes = normalised.mean(axis=1)
    classes /= np.linalg.norm(classes, axis=-1, keepdims=True)
    np.testing.assert_allclose(clip.zero_shot_classifier(jnp.asarray(prompts, jnp.float32)), classes, rtol=1e-5,
                               atol=1e-6)
    cosine = (images / np.linalg.norm(images, axis=1, keepdims=True)) @ classes.T
    predictions = np.asarray(clip.zero_shot_predictions(jnp.asarray(images), jnp.asarray(classes * 3.0)))
    np.testing.assert_array_equal(predictions, np.argmax(cosine, axis=1))
    assert len(set(predictions.tolist())) > 3 and predictions.dtype == np.int32


def test_digits_sit_at_the_centre_of_the_canvas():
    images = np.random.default_rng(2).integers(1, 256, size=(2, 8, 8, 1)).astype(np.float32)
    canvases = np.asarray(clip.place_on_canvas(jnp.asarray(images), (24, 48)))
    expected = np.zeros((2, 24, 48, 1), np.float32)
    expected[:, 8:16, 20:28] = images
    np.testing.assert_array_equal(canvases, expected)
    np.testing.assert_array_equal(np.asarray(clip.place_on_canvas(jnp.asarray(expected), (24, 48))), expected)
    with pytest.raises(UserError, match="32×32 images do not fit on the 24×48 canvas"):
        clip.place_on_canvas(jnp.zeros((1, 32, 32, 3)), (24, 48))


@pytest.mark.parametrize("change, message", [
    ({"embed_dim": 0}, "embed_dim=0 must be a positive integer"),
    ({"text_depth": 0}, "text.depth=0 must be a positive integer"),
    ({"text_width": 30}, "text.width=30 is not divisible by text.heads=4"),
])
def test_bad_settings_are_one_line_user_errors(change, message):
    with pytest.raises(UserError, match=message) as error:
        clip.CLIPSettings(**change)
    assert "\n" not in str(error.value)


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    digits = np.full((16, 4), -1)
    for row, count in enumerate(rng.integers(1, 5, size=16)):
        digits[row, :count] = rng.choice(10, size=count, replace=False)
    return {"image": rng.integers(0, 256, size=(16, *CANVAS, 1), dtype=np.uint8),
            "label": clip.templated_captions(digits, clip.clip_vocabulary())}


def run_step(devices, batch, initial, steps=1):
    """`steps` steps of `clip.train_step` from `initial` on the first `devices` devices in float64:
    (metrics of each step, the state after each step)."""
    data_parallel = DataParallel(make_mesh(jax.devices()[:devices]), "shard_map")
    step = data_parallel.step(clip.train_step, donate=False)
    placed, history, states = data_parallel.put_state(initial), [], []
    for _ in range(steps):
        placed, metrics = step(placed, data_parallel.put_batch(batch))
        history.append(jax.device_get(data_parallel.get_state(metrics)))
        states.append(jax.device_get(data_parallel.get_state(placed)))
    return history, states


@pytest.fixture(scope="module")
def one_device(batch, start):
    with jax.enable_x64(True):
        return run_step(1, batch, start, steps=2)


def numpy_clip_loss(image_embeddings, text_embeddings, logit_scale):
    """½ (cross-entropy image→text + text→image) of exp(t)·u·vᵀ in float64 NumPy, positives on the diagonal."""
    u = image_embeddings / np.linalg.norm(image_embeddings, axis=1, keepdims=True)
    v = text_embeddings / np.linalg.norm(text_embeddings, axis=1, keepdims=True)
    logits = np.exp(logit_scale) * u @ v.T

    def cross_entropy(scores):
        shifted = scores - scores.max(axis=1, keepdims=True)
        return -np.mean(np.diag(shifted) - np.log(np.exp(shifted).sum(axis=1)))

    return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


def test_step_equals_a_float64_recomputation_of_loss_and_update(batch, start, one_device):
    """Captions drawn per example from fold_in(fold_in(rng, step), index), the loss of NumPy, the optax
    update of its gradient, BatchNorm statistics of the whole batch."""
    (metrics, _), (state, _) = one_device
    with jax.enable_x64(True):
        step_key = jax.random.fold_in(start.rng, start.step)
        templates = [int(jax.random.randint(jax.random.fold_in(step_key, index), (), 0, 4)) for index in range(16)]
        captions = batch["label"][np.arange(16), templates]
        images = np.asarray(jax.jit(model_input)(batch["image"]), np.float64)
        model = tiny_model(bn_axis_name=None)

        @jax.jit
        def forward(params):
            return model.apply({"params": params, "batch_stats": start.batch_stats}, images, captions, train=True,
                               mutable=["batch_stats"])

        (image_embeddings, text_embeddings, logit_scale), updates = forward(start.params)
        loss = numpy_clip_loss(np.asarray(image_embeddings), np.asarray(text_embeddings), float(logit_scale))
        grads = jax.jit(jax.grad(lambda params: clip.clip_loss(*forward(params)[0])))(start.params)
        update, _ = jax.jit(start.tx.update)(grads, start.opt_state, start.params)
        params = optax.apply_updates(start.params, update)
    assert len(set(templates)) > 1
    np.testing.assert_allclose(metrics["loss"], loss, rtol=1e-12)
    np.testing.assert_allclose(metrics["logit_scale"], clip.INITIAL_LOGIT_SCALE, rtol=1e-12)
    chex.assert_trees_all_close(state.params, params, rtol=1e-10, atol=1e-14)
    chex.assert_trees_all_close(state.batch_stats, updates["batch_stats"], rtol=1e-10, atol=1e-14)
    assert float(state.params["logit_scale"]) != clip.INITIAL_LOGIT_SCALE


def test_the_step_clips_logit_scale_after_the_update(batch, start):
    """An optimizer that adds 10 to every parameter: logit_scale ends at log(100), the rest at +10."""
    add_ten = optax.GradientTransformation(lambda params: optax.EmptyState(),
                                           lambda grads, state, params=None: (jax.tree.map(
                                               lambda grad: jnp.full_like(grad, 10.0), grads), state))
    with jax.enable_x64(True):
        _, (state,) = run_step(1, batch, start.replace(tx=add_ten, opt_state=add_ten.init(start.params)))
        np.testing.assert_allclose(state.params["logit_scale"], np.log(100), rtol=1e-15)
        chex.assert_trees_all_close(state.params["text_encoder"],
                                    jax.tree.map(lambda leaf: leaf + 10.0, start.params["text_encoder"]), rtol=1e-15)


def test_eight_devices_equal_one_device(batch, start, one_device):
    """8 devices, 2 different canvases each (and their own template draws), equal 1 device on all 16."""
    expected_history, expected_states = one_device
    with jax.enable_x64(True):
        history, states = run_step(8, batch, start, steps=2)
        assert_eight_devices_equal_one(history, states[-1], (expected_history, expected_states[-1], start),
                                       "logit_scale")
