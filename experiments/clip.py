"""CLIP on the digit-string canvases: `python -m experiments.clip`.

An image tower (the config's encoder, BatchNorm synchronised over the mesh, and a linear projection)
and a causal Transformer text tower learn a joint space from canvases of 1–4 digits and their
templated captions ("a photo of three one four", "the digits three, one and four", …, one template
per example and step), with CLIP's symmetric cross-entropy over the global batch and a learned
temperature (`visionax.ssl.clip`). Evaluated without a single label: zero-shot classification of the
digits test set (each 8×8 digit at the centre of a blank canvas, classified by its nearest prompt
embedding, "a photo of the digit seven" and two other prompts averaged), and image→text and
text→image retrieval recall@1 and @5 over the held-out canvases (a hit: a caption or canvas of the
same digit string). The run ends like every self-supervised run (`self_supervised.finish`): the
image tower's features of the digits against raw pixels and the random tower, kNN and linear probe
(`results.json` adds the zero-shot accuracies and the recalls; `curves.png`, `embedding.png`;
`--config.save_embeddings=True` adds `embeddings.npz`).
"""

from __future__ import annotations

import functools
import pathlib

import jax
import ml_collections
import numpy as np

from experiments import self_supervised
from visionax import cli, data, parallel, report
from visionax.data.captions import DigitCaptionData, load_digit_captions
from visionax.data.pipeline import ArraySource, Batches
from visionax.errors import UserError
from visionax.evaluate import map_over_batches
from visionax.losses.contrastive import l2_normalize
from visionax.ssl import clip
from visionax.train import loop, setup

NAME = "clip"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
RECALL_AT = (1, 5)


def check(config: ml_collections.ConfigDict) -> clip.CLIPSettings:
    """The validated settings; a UserError for a bad value or data other than the embedded digits."""
    settings = clip.CLIPSettings.from_config(config)
    for key in ("num_train", "num_test"):
        if config.captions[key] < 1:
            raise UserError(f"captions.{key}={config.captions[key]} must be >= 1; pass e.g. "
                            f"--config.captions.{key}=1000")
    if config.batch_size > config.captions.num_train:
        num_train = config.captions.num_train
        raise UserError(f"batch_size={config.batch_size} exceeds the {num_train} training canvases; use "
                        f"--config.batch_size={num_train} or less, or more --config.captions.num_train")
    name = data.DatasetSpec.from_config(config.data).name
    if name != "digits":
        raise UserError(f"CLIP trains on the digit-string canvases and is evaluated zero-shot on the embedded "
                        f"digits, not {name!r}; drop --config.data.folder and --config.data.name")
    return settings


def load_canvases(config: ml_collections.ConfigDict, split: str) -> DigitCaptionData:
    captions = config.captions
    return load_digit_captions(split, num_train=captions.num_train, num_test=captions.num_test, seed=captions.seed,
                               data_dir=config.data.data_dir or None)


def training_run(config: ml_collections.ConfigDict, run: setup.Setup) -> setup.Setup:
    """`run`'s mesh with batches of the training canvases: `{"image": uint8 [batch, 24, 48, 1], "label":
    int32 [batch, templates, length]}` (every template's caption of each canvas)."""
    canvases = load_canvases(config, "train")
    captions = clip.templated_captions(canvases.digits, clip.clip_vocabulary())
    return setup.Setup(run.data_parallel, run.spec, Batches(ArraySource(canvases.images, captions),
                                                            config.batch_size, config.seed))


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The CLIP model (image tower `config.model`, BatchNorm synchronised over the mesh), the step-0
    state and the per-device step, for the canvas batches of `run` (`training_run`)."""
    settings = clip.CLIPSettings.from_config(config)
    canvas_shape = run.batches.source[0]["image"].shape
    model = clip.clip_model(settings, self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS),
                            canvas_shape[:2])
    state = self_supervised.create_state(config, run, model, input_shape=canvas_shape)
    return model, state, clip.train_step


def zero_shot_scores(model: clip.CLIPModel, variables: dict, run: setup.Setup, batch_size: int) -> dict:
    """Zero-shot accuracy on the test digits, with the prompts averaged and with the first prompt alone."""
    prompts = clip.prompt_captions(clip.clip_vocabulary())
    texts = map_over_batches(run.data_parallel, functools.partial(clip.encode_captions, model), variables,
                             prompts.reshape(-1, prompts.shape[-1]), batch_size).reshape(*prompts.shape[:2], -1)
    images = map_over_batches(run.data_parallel, functools.partial(clip.encode_images, model), variables,
                              run.test.images, batch_size)

    def accuracy(prompt_embeddings):
        predictions = clip.zero_shot_predictions(images, clip.zero_shot_classifier(prompt_embeddings))
        return float(np.mean(np.asarray(predictions) == run.test.labels))

    return {"zero_shot_accuracy": accuracy(texts), "zero_shot_accuracy_one_prompt": accuracy(texts[:, :1])}


def retrieval_scores(model: clip.CLIPModel, variables: dict, run: setup.Setup, canvases: DigitCaptionData,
                     config: ml_collections.ConfigDict) -> dict:
    """Recall@k of image→text and text→image retrieval over the held-out canvases, each with one caption
    (its template drawn from the seed); relevant: the same digit string."""
    templated = clip.templated_captions(canvases.digits, clip.clip_vocabulary())
    captions = np.asarray(clip.choose_captions(jax.random.key(config.seed), templated))
    texts = map_over_batches(run.data_parallel, functools.partial(clip.encode_captions, model), variables, captions,
                             config.batch_size)
    images = map_over_batches(run.data_parallel, functools.partial(clip.encode_images, model), variables,
                              canvases.images, config.batch_size)
    similarity = np.asarray(l2_normalize(images) @ l2_normalize(texts).T)
    relevant = np.all(canvases.digits[:, None, :] == canvases.digits[None, :, :], axis=-1)
    scores = {}
    for k in RECALL_AT:
        scores[f"image_to_text_recall_at_{k}"] = float(clip.recall_at_k(similarity, relevant, k))
        scores[f"text_to_image_recall_at_{k}"] = float(clip.recall_at_k(similarity.T, relevant.T, k))
    return scores


def monitor(config: ml_collections.ConfigDict, run: setup.Setup, model: clip.CLIPModel):
    """The loop's evaluation: the image tower's kNN test accuracy and the zero-shot accuracy."""
    knn = self_supervised.knn_monitor(config, run, model, embed_function=clip.embed)

    def evaluate(state, step):
        return {**knn(state, step), **zero_shot_scores(model, state.variables, run, config.batch_size)}

    return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    check(config)  # a bad setting stops before the data is read
    run = setup.setup(config)  # the digits: zero-shot and the representation table
    training = training_run(config, run)
    held_out = load_canvases(config, "test")
    model, state, step = create(config, training)
    start_variables = state.variables
    state = loop.fit(config, workdir, state=state, per_device_step=step, batches=training.batches,
                     data_parallel=run.data_parallel, num_steps=config.epochs * training.batches.steps_per_epoch,
                     evaluate=monitor(config, run, model))
    scores = {**zero_shot_scores(model, state.variables, run, config.batch_size),
              **retrieval_scores(model, state.variables, run, held_out, config)}
    print(report.Table(f"CLIP zero-shot on {len(run.test.labels)} test digits and retrieval over "
                       f"{len(held_out.images)} held-out canvases", ["evaluation", "value"],
                       [[name.replace("_", " "), value] for name, value in scores.items()]).text())
    return self_supervised.finish(config, workdir, run, model, state, start_variables, "CLIP image tower",
                                  embed_function=clip.embed, summary=scores)


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
