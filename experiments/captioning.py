"""Lectures 10–11: image captioning with a bottleneck RNN, a bottleneck LSTM, an attention LSTM and
a Transformer, side by side: `python -m experiments.captioning`.

Default data: the embedded digit strings (canvases of 1–4 digits captioned with their names in
reading order, `visionax.data.captions.load_digit_captions`), so a decoder must look at a different
place for every word. Each decoder trains with the same encoder architecture, initialisation, batches
and optimizer (`visionax.train.captioning`, in `<workdir>/<decoder>`, resumable), then captions the
test split greedily and by beam search. Table: exact-match accuracy (the whole caption right) by
caption length, BLEU-4 (sacrebleu) overall and BLEU by length (of order min(4, length): a caption of
k < 4 words has no 4-grams), greedy vs beam, training seconds. Writes `results.json`,
`curves.png` (training loss and word accuracy) and `attention.png` (each word's attention over
test canvases, for the decoders that attend). `--config=experiments/configs/captioning_folder.py`
trains on a caption folder (Flickr8k/COCO layout) instead.
"""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import ml_collections
import numpy as np
import sacrebleu

from visionax import cli, registry, report
from visionax.data.captions import END, NULL, START, CaptionData, load_caption_folder, load_digit_captions
from visionax.data.pipeline import Batches
from visionax.errors import UserError, require_positive
from visionax.models import captioners
from visionax.parallel import DATA_AXIS, DataParallel, check_batch_size, make_mesh
from visionax.train import captioning, checkpoint, loop, optimizer, setup

NAME = "captioning"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
LABELS = {"rnn": "bottleneck RNN", "lstm": "bottleneck LSTM", "attention_lstm": "attention LSTM",
          "transformer": "Transformer"}
DECODERS = {
    "rnn": lambda config, vocab, channels: captioners.RNNCaptioner(
        vocab, channels, config.wordvec_dim, config.hidden_dim, cell="rnn"),
    "lstm": lambda config, vocab, channels: captioners.RNNCaptioner(
        vocab, channels, config.wordvec_dim, config.hidden_dim, cell="lstm"),
    "attention_lstm": lambda config, vocab, channels: captioners.AttentionLSTMCaptioner(
        vocab, channels, config.wordvec_dim, config.hidden_dim),
    "transformer": lambda config, vocab, channels: captioners.CaptioningTransformer(
        vocab, config.transformer.embed_dim, config.transformer.num_heads, config.transformer.num_layers,
        config.transformer.feedforward_dim, config.max_length, config.transformer.dropout_rate),
}


def load_split(data: ml_collections.ConfigDict, split: str) -> tuple[CaptionData, np.ndarray]:
    """The split as (images, captions, image_index, vocabulary) and the word count of each image's
    first reference `[images]` (the length the table groups by)."""
    data_dir = data.data_dir or None
    if data.name == "digit_captions":
        digits = load_digit_captions(split, num_train=data.num_train, num_test=data.num_test, seed=data.seed,
                                     data_dir=data_dir)
        pairs = CaptionData(digits.images, digits.captions, np.arange(len(digits.images), dtype=np.int32),
                            (), digits.vocabulary)
        return pairs, digits.num_digits
    if data.name == "caption_folder":
        if not data.folder:
            raise UserError("data.name=caption_folder needs a folder; pass --config.data.folder=<root with "
                            "train/ and test/, each holding images/ and captions.json>")
        pairs = load_caption_folder(data.folder, split, image_size=data.image_size, min_count=data.min_count,
                                    max_length=data.max_length, data_dir=data_dir)
        first = np.unique(pairs.image_index, return_index=True)[1]
        return pairs, np.sum(pairs.captions[first] > END, axis=1)  # words (<UNK> included)
    raise UserError(f"unknown caption dataset {data.name!r}; use --config.data.name=digit_captions or caption_folder")


def references(pairs: CaptionData) -> list[list[str]]:
    """Every caption of every image, decoded: `[images][captions]`."""
    grouped = [[] for _ in range(len(pairs.images))]
    for caption, image in zip(pairs.captions, pairs.image_index):
        grouped[image].append(pairs.vocabulary.decode(caption))
    return grouped


def bleu(hypotheses: list[str], refs: list[list[str]], order: int = 4) -> float:
    """Corpus BLEU (sacrebleu, words as tokens) against every reference of each image."""
    streams = [[group[k] if k < len(group) else group[0] for group in refs] for k in range(max(map(len, refs)))]
    return float(sacrebleu.metrics.BLEU(tokenize="none", max_ngram_order=order).corpus_score(hypotheses, streams).score)


def caption_all(captioner, state, images: np.ndarray, max_length: int, batch_size: int, beam_size: int = 0):
    """Decoded captions `[n, max_length]` and attention `[n, max_length − 1, h, w]` (or None)."""
    words, attention = [], []
    for begin in range(0, len(images), batch_size):
        decoded = captioning.describe(captioner, state.params, state.batch_stats,
                                      images[begin:begin + batch_size], max_length, beam_size)
        words.append(np.asarray(decoded.words))
        if decoded.attention is not None:
            attention.append(np.asarray(decoded.attention))
    return np.concatenate(words), (np.concatenate(attention) if attention else None)


def scores(vocabulary, words: np.ndarray, refs: list[list[str]], lengths: np.ndarray) -> dict:
    """Exact match (the caption equals one of the image's references) and BLEU, overall and by length."""
    hypotheses = [vocabulary.decode(caption) for caption in words]
    exact = np.array([hypothesis in group for hypothesis, group in zip(hypotheses, refs)])
    result = {"exact_match": float(exact.mean()), "bleu4": bleu(hypotheses, refs)}
    for length in np.unique(lengths):
        chosen = np.flatnonzero(lengths == length)
        result[f"exact_match_{length}"] = float(exact[chosen].mean())
        result[f"bleu_{length}"] = bleu([hypotheses[i] for i in chosen], [refs[i] for i in chosen],
                                        order=int(min(4, max(length, 1))))
    return result


def check(config: ml_collections.ConfigDict) -> None:
    require_positive(config, ("epochs", "wordvec_dim", "hidden_dim", "beam_size", "eval_examples"))


def plot_attention(test: CaptionData, words: dict, attention: dict, path: pathlib.Path, examples: int) -> pathlib.Path:
    """One row per (decoder that attends, test canvas): the canvas, then each decoded word's
    attention map stretched over the canvas."""
    rows = [(name, index) for name in attention for index in range(examples)]
    columns = 1 + max(words[name].shape[1] - 1 for name in attention)
    fig, axes = report.figure(len(rows), columns, panel_size=(2.2, 1.4))
    for row, (name, index) in enumerate(rows):
        image = test.images[index, ..., 0] if test.images.shape[-1] == 1 else test.images[index]
        extent = (0, image.shape[1], image.shape[0], 0)
        axes[row, 0].imshow(image, cmap="gray", extent=extent)
        axes[row, 0].set_title(f"{LABELS[name]}", fontsize=8)
        caption = words[name][index, 1:]
        for column in range(1, columns):
            axis = axes[row, column]
            word = caption[column - 1] if column - 1 < len(caption) else 0
            if word in (NULL, START):  # nothing more was said
                axis.axis("off")
                continue
            axis.imshow(image, cmap="gray", extent=extent)
            axis.imshow(attention[name][index, column - 1], cmap="magma", alpha=0.6, extent=extent)
            axis.set_title(test.vocabulary.words[word], fontsize=8)
        for axis in axes[row]:
            axis.set_xticks([])
            axis.set_yticks([])
    return report.save(fig, path, title="Where each word looked (greedy decoding)", dpi=90)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    names = registry.lookup_many(DECODERS, config.decoders, "decoder", "decoders")
    check(config)
    train, _ = load_split(config.data, "train")
    test, lengths = load_split(config.data, "test")
    if train.captions.shape[1] > config.max_length:
        raise UserError(f"captions of {train.captions.shape[1]} ids exceed max_length={config.max_length}; "
                        f"set --config.max_length={train.captions.shape[1]} or more")
    data_parallel = DataParallel(make_mesh(), config.parallel)
    check_batch_size(config.batch_size, data_parallel.device_count)
    batches = Batches(captioning.CaptionSource(train.images, train.captions, train.image_index),
                      config.batch_size, config.seed)
    num_steps = config.epochs * batches.steps_per_epoch
    encoder = setup.model_from_config(config, None, bn_axis_name=DATA_AXIS)  # BatchNorm over the global batch
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=batches.steps_per_epoch)
    sample = batches.host_batch(0)
    channels = jax.eval_shape(lambda images: captioners.encode(
        encoder, encoder.init(jax.random.key(0), images), images)[0],
        jax.ShapeDtypeStruct(sample["image"].shape, np.float32)).shape[-1]
    captioners_by_name = {name: captioning.Captioner(encoder, DECODERS[name](config, train.vocabulary.size, channels))
                          for name in names}
    eval_images, refs = test.images, references(test)
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    rows, runs, words, attention = [], {}, {}, {}
    for name, captioner in captioners_by_name.items():
        state = captioning.create_state(jax.random.key(config.seed), captioner, tx, sample["image"], sample["label"])
        caption = functools.partial(caption_all, captioner, max_length=config.max_length,
                                    batch_size=config.eval_batch_size)

        def evaluate(state, step, caption=caption):
            del step
            chosen = slice(0, config.eval_examples)
            decoded, _ = caption(state, eval_images[chosen])
            return {"exact_match": scores(test.vocabulary, decoded, refs[chosen], lengths[chosen])["exact_match"]}

        runs[LABELS[name]] = pathlib.Path(workdir) / name
        started = time.perf_counter()
        state = loop.fit(ml_collections.ConfigDict(config.to_dict() | {"decoders": name}), runs[LABELS[name]],
                         state=state, per_device_step=functools.partial(captioning.train_step, captioner=captioner),
                         batches=batches, data_parallel=data_parallel, num_steps=num_steps, evaluate=evaluate)
        seconds = time.perf_counter() - started
        words[name], maps = caption(state, eval_images)
        if maps is not None:
            attention[name] = maps
        greedy = scores(test.vocabulary, words[name], refs, lengths)
        beam = scores(test.vocabulary, caption(state, eval_images, beam_size=config.beam_size)[0], refs, lengths)
        by_length = [greedy[f"exact_match_{length}"] for length in np.unique(lengths)]
        bleu_by_length = [greedy[f"bleu_{length}"] for length in np.unique(lengths)]
        rows.append([LABELS[name], greedy["exact_match"], *by_length, greedy["bleu4"], *bleu_by_length,
                     beam["exact_match"], beam["bleu4"], seconds])
    unique = [int(length) for length in np.unique(lengths)]
    table = report.Table(
        f"captioners on {config.data.name}: {num_steps} steps each, {len(eval_images)} test images",
        ["decoder", "exact match", *(f"exact match, {k} words" for k in unique), "BLEU-4",
         *(f"BLEU-{min(k, 4)}, {k} words" for k in unique), f"beam {config.beam_size} exact match",
         f"beam {config.beam_size} BLEU-4", "train seconds"],
        rows)
    plots = [report.plot_runs(runs, [("train", "loss"), ("train", "word_accuracy"), ("eval", "exact_match")],
                              pathlib.Path(workdir) / "curves.png", title="Captioners")]
    if attention:
        plots.append(plot_attention(test, words, attention, pathlib.Path(workdir) / "attention.png",
                                    config.attention_examples))
    samples = {name: [test.vocabulary.decode(caption) for caption in words[name][:config.attention_examples]]
               for name in names}
    return report.finish(workdir, table, plots=plots, summary={
        "train_captions": len(train.captions), "test_images": len(eval_images), "steps": num_steps,
        "samples": samples, "references": refs[:config.attention_examples]})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
