"""CLIP (Radford et al. 2021): an image tower and a text tower trained so that an image and its caption
land close in one joint space, and the zero-shot classifier that falls out of it.

Image tower: any zoo encoder `[batch, h, w, c] → [batch, features]` then a linear projection (no
bias) to `embed_dim`. Text tower (`TextTransformer`): word embedding + the sinusoidal positions of
`visionax.layers.attention.positional_encoding`, pre-norm Transformer blocks with a causal mask
(`CausalBlock`: the project's `MultiHeadAttention`, `LayerNorm` and ViT's `MlpBlock`), a final
LayerNorm, the feature at each caption's `<END>` token (captions are `<START> w_1 … w_k <END>`
padded with `<NULL>`; the causal mask makes that feature a summary of the whole caption and blind to
the padding), then a linear projection (no bias) to `embed_dim`. A learnable scalar `logit_scale`
t starts at log(1/0.07) and is clipped at log(100) after every update (`clip_logit_scale`, as
CLIP's training code clamps the parameter), so the logits e^t·u·v never get a temperature below 0.01.
The loss is `visionax.losses.contrastive.clip_loss`, sharded over the devices.

Data: the digit-string canvases of `visionax.data.captions.load_digit_captions` with templated
captions (`CAPTION_TEMPLATES`: "a photo of three one four", "the digits three, one and four", …)
over `clip_vocabulary()` (the digit vocabulary plus the templates' words). Every canvas carries its
caption in every template, `[templates, length]`, and each step draws one template per example from
the key `fold_in(fold_in(rng, step), global example index)` (`choose_captions`), so 8 devices give
the numbers of 1.

Evaluation: zero-shot classification (the class embedding of digit d is the normalised mean of the
normalised text embeddings of `PROMPT_TEMPLATES` filled with d's name, CLIP's prompt ensembling;
an image gets the class of highest cosine similarity) and retrieval recall@k, where a retrieved item
counts as relevant when it shows/names the same digit string (strings repeat across canvases).
Images smaller than the canvas the tower was trained on (the 8×8 digits) are placed at its centre
(`place_on_canvas`).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax.data.captions import DIGIT_WORDS, END, WordVocabulary, digit_vocabulary, tokenize
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.layers.attention import MultiHeadAttention, causal_mask, positional_encoding
from visionax.layers.norm import LayerNorm
from visionax.losses.contrastive import clip_loss, l2_normalize
from visionax.models.vit import MlpBlock
from visionax.parallel import DATA_AXIS
from visionax.train.state import TrainState

__all__ = ["CAPTION_LENGTH", "CAPTION_TEMPLATES", "CLIPModel", "CLIPSettings", "CausalBlock", "INITIAL_LOGIT_SCALE",
           "MAX_LOGIT_SCALE", "PROMPT_TEMPLATES", "TextTransformer", "caption_text", "choose_captions",
           "clip_logit_scale", "clip_model", "clip_vocabulary", "embed", "encode_captions", "encode_images",
           "end_features", "place_on_canvas", "prompt_captions", "recall_at_k", "templated_captions",
           "train_step", "zero_shot_classifier", "zero_shot_predictions"]

INITIAL_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
MAX_LOGIT_SCALE = math.log(100.0)  # the inverse temperature never exceeds 100

# Training captions of a canvas: {sequence} "three one four", {listing} "three, one and four",
# {noun} "digit" for one digit, else "digits".
CAPTION_TEMPLATES = ("a photo of {sequence}", "the {noun} {listing}", "{sequence}",
                     "a picture of the number {sequence}")
# Zero-shot prompts of the class named {word}: their text embeddings are averaged (prompt ensembling).
PROMPT_TEMPLATES = ("a photo of the digit {word}", "the digit {word}", "a picture of the number {word}")


def caption_text(template: str, words: list[str]) -> str:
    """`template` filled with the digit names `words` in reading order."""
    listing = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return template.format(sequence=" ".join(words), listing=listing, noun="digit" if len(words) == 1 else "digits")


def _template_tokens(num_digits: int) -> list[list[str]]:
    """The tokens of every caption template with `num_digits` digits and of every prompt."""
    words = list(DIGIT_WORDS[:num_digits])
    return ([tokenize(caption_text(template, words)) for template in CAPTION_TEMPLATES]
            + [tokenize(template.format(word=words[0])) for template in PROMPT_TEMPLATES])


def clip_vocabulary() -> WordVocabulary:
    """`digit_vocabulary()` (digit d keeps id 4 + d) followed by the other words and marks of the
    caption and prompt templates, in order of first appearance."""
    words = list(digit_vocabulary().words)
    for tokens in _template_tokens(3):
        words += [token for token in tokens if token not in words]
    return WordVocabulary(tuple(words))


# ids of the longest caption (four digits in the longest template) with <START> and <END>
CAPTION_LENGTH = 2 + max(map(len, _template_tokens(4)))


def templated_captions(digits: np.ndarray, vocabulary: WordVocabulary, max_length: int = CAPTION_LENGTH
                       ) -> np.ndarray:
    """Every canvas's caption in every template: int32 `[n, len(CAPTION_TEMPLATES), max_length]` for
    `digits` `[n, 4]` (the canvases' digits in reading order, −1 padded)."""
    captions = np.zeros((len(digits), len(CAPTION_TEMPLATES), max_length), np.int32)
    for index, row in enumerate(np.asarray(digits)):
        words = [DIGIT_WORDS[digit] for digit in row if digit >= 0]
        for slot, template in enumerate(CAPTION_TEMPLATES):
            captions[index, slot] = vocabulary.encode(caption_text(template, words), max_length)
    return captions


def prompt_captions(vocabulary: WordVocabulary, class_names=DIGIT_WORDS, max_length: int = CAPTION_LENGTH
                    ) -> np.ndarray:
    """The zero-shot prompts: int32 `[classes, len(PROMPT_TEMPLATES), max_length]`, entry [c, p] =
    PROMPT_TEMPLATES[p] filled with class c's name."""
    return np.stack([[vocabulary.encode(template.format(word=name), max_length) for template in PROMPT_TEMPLATES]
                     for name in class_names])


def choose_captions(key: jax.Array, captions: jax.Array, first_index: jax.Array | int = 0) -> jax.Array:
    """One template per example: `captions` `[batch, templates, length]` → `[batch, length]`, example
    i taking template k_i ~ uniform{0 … templates − 1} drawn with `fold_in(key, first_index + i)`."""
    indices = first_index + jnp.arange(captions.shape[0])
    chosen = jax.vmap(lambda index: jax.random.randint(jax.random.fold_in(key, index), (), 0, captions.shape[1])
                      )(indices)
    return captions[jnp.arange(captions.shape[0]), chosen]


def end_features(features: jax.Array, captions: jax.Array) -> jax.Array:
    """The feature at each caption's first `<END>`: features `[batch, length, width]`, captions
    `[batch, length]` → `[batch, width]` (position 0 for a caption without `<END>`)."""
    positions = jnp.argmax(captions == END, axis=1)
    return features[jnp.arange(features.shape[0]), positions]


class CausalBlock(nn.Module):
    """A pre-norm Transformer block with a mask: x + MHA(LN(x), mask), then x + MLP(LN(x)) with ViT's
    `MlpBlock` (`hidden` units, GELU), computed in the input's dtype; `[batch, length, width] → [batch,
    length, width]`."""

    num_heads: int
    hidden: int

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        attention = MultiHeadAttention(x.shape[-1], self.num_heads, name="attention")
        x = x + attention(LayerNorm(epsilon=1e-5, name="ln1")(x), mask=mask)
        return x + MlpBlock(self.hidden, dtype=None, name="mlp")(LayerNorm(epsilon=1e-5, name="ln2")(x))


class TextTransformer(nn.Module):
    """CLIP's text tower without its projection: x = embedding(words) + positional_encoding,
    `depth` `CausalBlock`s under the causal mask, LayerNorm; `token_features(captions [batch, length])`
    → `[batch, length, width]` (position t sees positions ≤ t only), `__call__` → the `<END>`
    features `[batch, width]`. Word embeddings start at N(0, 1), the scale of the sinusoids: at the
    captioner's N(0, 0.02²) the words are a 2% ripple on the positions and the tower learned only
    where `<END>` sits, i.e. how many digits there are (the default run's loss stuck at log(batch/4))."""

    vocab_size: int
    width: int = 64
    depth: int = 2
    num_heads: int = 4
    mlp_dim: int = 128
    max_length: int = CAPTION_LENGTH

    def setup(self):
        self.embedding = nn.Embed(self.vocab_size, self.width, embedding_init=nn.initializers.normal(1.0))
        self.blocks = [CausalBlock(self.num_heads, self.mlp_dim) for _ in range(self.depth)]
        self.final_norm = LayerNorm(epsilon=1e-5)

    def token_features(self, captions: jax.Array) -> jax.Array:
        length = captions.shape[1]
        if length > self.max_length:
            raise UserError(f"captions of {length} ids exceed the text tower's max_length {self.max_length}; "
                            "raise max_length or shorten the captions")
        x = self.embedding(captions) + positional_encoding(length, self.width)
        mask = causal_mask(length)
        for block in self.blocks:
            x = block(x, mask)
        return self.final_norm(x)

    def __call__(self, captions: jax.Array) -> jax.Array:
        return end_features(self.token_features(captions), captions)


class CLIPModel(nn.Module):
    """The two towers and the logit scale. `__call__(images [batch, h, w, c] (model input), captions
    [batch, length], train)` → (image embeddings `[batch, embed_dim]`, text embeddings `[batch,
    embed_dim]`, logit_scale); without captions (as `init` on images is called) an all-`<NULL>`
    caption stands in, so `init` builds both towers. Images smaller than the `canvas` `(height, width)`
    the image tower is trained on are placed at its centre (`place_on_canvas`); `embed` gives the image
    encoder's features (evaluation mode, before the projection)."""

    image_encoder: nn.Module
    text_encoder: TextTransformer
    embed_dim: int = 64
    canvas: tuple[int, int] = (24, 48)

    def setup(self):
        self.image_projection = nn.Dense(self.embed_dim, use_bias=False)
        self.text_projection = nn.Dense(self.embed_dim, use_bias=False)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(INITIAL_LOGIT_SCALE), ())

    def __call__(self, images: jax.Array, captions: jax.Array | None = None, train: bool = False):
        if captions is None:
            captions = jnp.zeros((images.shape[0], self.text_encoder.max_length), jnp.int32)
        return self.encode_image(images, train), self.encode_text(captions), self.logit_scale

    def encode_image(self, images: jax.Array, train: bool = False) -> jax.Array:
        return self.image_projection(self.image_encoder(place_on_canvas(images, self.canvas), train=train))

    def encode_text(self, captions: jax.Array) -> jax.Array:
        return self.text_projection(self.text_encoder(captions))

    def embed(self, images: jax.Array) -> jax.Array:
        return self.image_encoder(place_on_canvas(images, self.canvas), train=False)


@dataclasses.dataclass(frozen=True)
class CLIPSettings:
    """The joint space's `embed_dim` and the text tower's `text_width`, `text_depth`, `text_heads`
    and `text_mlp_dim`. Validated here, once."""

    embed_dim: int = 64
    text_width: int = 64
    text_depth: int = 2
    text_heads: int = 4
    text_mlp_dim: int = 128

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                key = field.name if field.name == "embed_dim" else f"text.{field.name[5:]}"
                raise UserError(f"{key}={value!r} must be a positive integer; pass e.g. --config.{key}=64")
        if self.text_width % self.text_heads:
            raise UserError(f"text.width={self.text_width} is not divisible by text.heads={self.text_heads}; "
                            "choose a width that is a multiple of the number of heads")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> CLIPSettings:
        text = config.text
        return cls(embed_dim=config.embed_dim, text_width=text.width, text_depth=text.depth, text_heads=text.heads,
                   text_mlp_dim=text.mlp_dim)


def clip_model(settings: CLIPSettings, image_encoder: nn.Module, canvas: tuple[int, int]) -> CLIPModel:
    """A `CLIPModel` over `image_encoder` with the text tower of `settings` on `clip_vocabulary()`."""
    text = TextTransformer(clip_vocabulary().size, settings.text_width, settings.text_depth, settings.text_heads,
                           settings.text_mlp_dim)
    return CLIPModel(image_encoder, text, settings.embed_dim, tuple(canvas))


def place_on_canvas(images: jax.Array, canvas: tuple[int, int]) -> jax.Array:
    """`images` `[batch, h, w, c]` at the centre of zero canvases `[batch, *canvas, c]`: rows
    ⌊(H − h)/2⌋ …, columns ⌊(W − w)/2⌋ … (the 8×8 digits on a 24×48 canvas: rows 8–15, columns
    20–27); unchanged when they already have the canvas's size."""
    height, width = images.shape[1:3]
    if height > canvas[0] or width > canvas[1]:
        raise UserError(f"{height}×{width} images do not fit on the {canvas[0]}×{canvas[1]} canvas CLIP's image "
                        "tower was trained on; evaluate it on the embedded digits (--config.data.name=digits)")
    top, left = (canvas[0] - height) // 2, (canvas[1] - width) // 2
    padding = ((0, 0), (top, canvas[0] - height - top), (left, canvas[1] - width - left), (0, 0))
    return jnp.pad(images, padding)


def clip_logit_scale(state: TrainState) -> TrainState:
    """The state with its `logit_scale` parameter clipped at MAX_LOGIT_SCALE = log(100)."""
    params = dict(state.params)
    params["logit_scale"] = jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE)
    return state.replace(params=params)


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One CLIP step on this device's `batch` = `{"image": uint8 [local_batch, h, w, c], "label": int32
    [local_batch, templates, length]}` (each canvas's caption in every template).

    One template per example (`choose_captions` with the key `fold_in(state.rng, state.step)` and the
    global example index), both towers (BatchNorm as the encoder's, synchronised when it is), the
    sharded `clip_loss` of the global batch, gradients and statistics averaged over `DATA_AXIS`, the
    update, then `logit_scale` clipped at log(100). Returns the new state and `{"loss", "logit_scale"}`
    (the scale used by this step's loss)."""
    images = model_input(batch["image"])
    first_index = jax.lax.axis_index(DATA_AXIS) * images.shape[0]
    captions = choose_captions(jax.random.fold_in(state.rng, state.step), batch["label"], first_index)

    def loss_fn(params):
        (image_embeddings, text_embeddings, logit_scale), updates = state.apply_fn(
            {**state.variables, "params": params}, images, captions, train=True, mutable=["batch_stats"])
        return clip_loss(image_embeddings, text_embeddings, logit_scale, DATA_AXIS), updates.get("batch_stats", {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)
    metrics = {"loss": loss, "logit_scale": state.params["logit_scale"]}
    return clip_logit_scale(state.apply_gradients(grads, batch_stats=batch_stats)), metrics


def embed(model: CLIPModel, variables: dict, images: jax.Array) -> jax.Array:
    """The image encoder's features `[batch, features]` (evaluation mode, before the projection) of uint8
    images `[batch, h, w, c]` placed on the model's canvas: what the kNN monitor, the probe and saved
    embeddings use."""
    return model.apply(variables, model_input(images), method=CLIPModel.embed)


def encode_images(model: CLIPModel, variables: dict, images: jax.Array) -> jax.Array:
    """Image embeddings `[batch, embed_dim]` (evaluation mode, unnormalised) of uint8 images placed on
    the model's canvas."""
    return model.apply(variables, model_input(images), method=CLIPModel.encode_image)


def encode_captions(model: CLIPModel, variables: dict, captions: jax.Array) -> jax.Array:
    """Text embeddings `[batch, embed_dim]` (unnormalised) of captions `[batch, length]`."""
    return model.apply(variables, captions, method=CLIPModel.encode_text)


def zero_shot_classifier(prompt_embeddings: jax.Array) -> jax.Array:
    """Class embeddings `[classes, dim]` from the text embeddings of each class's prompts `[classes,
    prompts, dim]`: w_c = normalise(mean_p normalise(e_{c,p}))."""
    return l2_normalize(jnp.mean(l2_normalize(prompt_embeddings), axis=1))


def zero_shot_predictions(image_embeddings: jax.Array, class_embeddings: jax.Array) -> jax.Array:
    """The class of highest cosine similarity for each image: argmax_c normalise(u_i)·w_c, `[n]`
    int32, for image embeddings `[n, dim]` and class embeddings `[classes, dim]`."""
    return jnp.argmax(l2_normalize(image_embeddings) @ l2_normalize(class_embeddings).T, axis=1).astype(jnp.int32)


def recall_at_k(similarity: jax.Array, relevant: jax.Array, k: int) -> jax.Array:
    """Recall@k of retrieval: the fraction of queries (rows of `similarity` `[queries, items]`) with a
    relevant item (`relevant`, bool of the same shape, at least one per row) among their k most
    similar items. Ties are broken in favour of the relevant items: query q is a hit when fewer than
    k items score strictly higher than its best relevant one."""
    best = jnp.max(jnp.where(relevant, similarity, -jnp.inf), axis=1, keepdims=True)
    return jnp.mean(jnp.sum(similarity > best, axis=1) < k)
