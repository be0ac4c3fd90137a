"""Lecture 10: character language models — the vanilla RNN, the LSTM and the GRU side by side.

Each cell (`visionax.models.char_lm.CharLanguageModel`: embedding, cell, linear read-out) is trained
on the same text with the same initialisation seed by truncated backpropagation through time
(`visionax.train.bptt`): `batch_size` contiguous streams of the training text read `chunk_length`
characters a step, the hidden state carried from chunk to chunk, Adam after clipping the gradient's
global norm. Each trains in `<workdir>/<cell>` through the shared training loop, so a run killed and
started again resumes from its checkpoint with the carried state and the position in the text.
The held-out bits per character (the whole test split read once, the state carried along) are set
against the exact add-one unigram and bigram baselines of the same text
(`visionax.data.text`), and each model writes samples at several temperatures. Writes
`bits_per_char.png` and `results.json` (samples included) and prints the table and the samples.

The streams are not split across devices (each carries its own state): training runs on one device.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from visionax import cli, parallel, registry, report
from visionax.data.text import EncodedText, bigram_bits_per_char, unigram_bits_per_char
from visionax.errors import UserError, require_positive
from visionax.models import char_lm
from visionax.models.costs import parameter_total
from visionax.train import bptt, checkpoint, loop
from visionax.train.metrics import last_record, read_metrics

NAME = "char_rnn"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
LABELS = {"rnn": "vanilla RNN", "lstm": "LSTM", "gru": "GRU"}
POSITIVE_KEYS = ("embedding", "hidden", "batch_size", "chunk_length", "num_steps", "sample_length")


@dataclasses.dataclass(frozen=True)
class TextStreams:
    """The training text as `batch` streams `[batch, length]`: `loop.fit`'s batch at every step (the
    truncated-BPTT step reads its chunk at the state's position)."""

    streams: np.ndarray

    def host_batch(self, step: int) -> np.ndarray:
        return self.streams


def check_config(config: ml_collections.ConfigDict) -> tuple[list[str], tuple[float, ...]]:
    """The cell names and the sampling temperatures; a UserError for any bad value."""
    cells = list(registry.lookup_many(char_lm.CELLS, config.cells, "cell", "cells"))
    require_positive(config, POSITIVE_KEYS)
    for key in ("learning_rate", "clip_norm"):
        if not config[key] > 0:
            raise UserError(f"{key}={config[key]} must be positive; set e.g. --config.{key}=1")
    if not 0 <= config.decay_to <= 1:
        raise UserError(f"decay_to={config.decay_to} must be in [0, 1]; pass --config.decay_to=0.1 (1: constant)")
    if not config.sample_prompt:
        raise UserError("sample_prompt is empty; pass at least one character, e.g. --config.sample_prompt='The '")
    return cells, parse_temperatures(config.sample_temperatures)


def parse_temperatures(text: str) -> tuple[float, ...]:
    """The comma-separated temperatures of `text`, each a number >= 0."""
    try:
        temperatures = tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        temperatures = ()
    if not temperatures or min(temperatures) < 0:
        raise UserError(f"sample_temperatures={text!r} must be comma-separated numbers >= 0; "
                        "pass e.g. --config.sample_temperatures=0.2,0.5,1.0")
    return temperatures


def training_streams(text: EncodedText, batch_size: int, chunk_length: int) -> np.ndarray:
    """The training ids as `[batch_size, length]` streams that hold at least one chunk and its target."""
    streams = np.asarray(bptt.streams(text.train, batch_size))
    if streams.shape[1] < chunk_length + 1:
        raise UserError(f"batch_size={batch_size} streams of the {len(text.train)} training characters hold "
                        f"{streams.shape[1]} each, fewer than chunk_length + 1 = {chunk_length + 1}; use a "
                        "smaller --config.batch_size or --config.chunk_length")
    return streams


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """Clip the gradient to global norm `clip_norm`, then Adam with a cosine decay from learning_rate
    to decay_to × learning_rate over num_steps."""
    schedule = optax.cosine_decay_schedule(config.learning_rate, config.num_steps, alpha=config.decay_to)
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(schedule))


def create_state(config: ml_collections.ConfigDict, model: char_lm.CharLanguageModel,
                 tx: optax.GradientTransformation) -> bptt.BPTTState:
    """The step-0 state: parameters from the seed, the zero carry `[batch_size, hidden]`, position 0."""
    carry = model.initialize_carry(config.batch_size)
    chunk = jnp.zeros((config.batch_size, config.chunk_length), jnp.int32)
    params = model.init(jax.random.PRNGKey(config.seed), carry, chunk)["params"]
    return bptt.BPTTState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                          rng=jax.random.PRNGKey(config.seed), apply_fn=model.apply, tx=tx, carry=carry,
                          position=jnp.zeros((), jnp.int32))


def write_samples(config: ml_collections.ConfigDict, model: char_lm.CharLanguageModel, params,
                  text: EncodedText, temperatures: tuple[float, ...]) -> dict[str, str]:
    """{temperature: prompt + sample_length sampled characters}, one key per temperature."""
    prompt = jnp.asarray(text.vocabulary.encode(config.sample_prompt))
    samples = {}
    for index, temperature in enumerate(temperatures):
        key = jax.random.fold_in(jax.random.PRNGKey(config.seed), index)
        ids = char_lm.sample(model, params, prompt, key, temperature, length=config.sample_length)
        samples[f"{temperature:g}"] = config.sample_prompt + text.vocabulary.decode(np.asarray(ids))
    return samples


def plot(runs: dict[str, pathlib.Path], baselines: dict[str, float], path: pathlib.Path) -> pathlib.Path:
    """Training bits per character of each cell against the step (lines), its held-out bits
    (points), and the unigram and bigram baselines (horizontal lines)."""
    fig, axes = report.figure(panel_size=(7.0, 4.5))
    axis = axes[0, 0]
    for index, (cell, workdir) in enumerate(runs.items()):
        records = read_metrics(workdir)
        train = [(record["step"], record["loss"] / math.log(2)) for record in records if record["split"] == "train"]
        held_out = [(record["step"], record["bits_per_char"]) for record in records if record["split"] == "eval"]
        color = f"C{index}"
        axis.plot(*zip(*train), color=color, label=f"{LABELS[cell]}, training")
        axis.plot(*zip(*held_out), "o", color=color, label=f"{LABELS[cell]}, held out")
    for (name, bits), style in zip(baselines.items(), (":", "--")):
        axis.axhline(bits, color="gray", linestyle=style, label=f"{name} baseline ({bits:.3f})")
    axis.set_xlabel("step")
    axis.set_ylabel("bits per character")
    axis.set_ylim(0, None)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return report.save(fig, path, title="Character language models, truncated BPTT")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    cells, temperatures = check_config(config)
    text = EncodedText.from_config(config.data)
    streams = TextStreams(training_streams(text, config.batch_size, config.chunk_length))
    vocab_size = text.vocabulary.size
    baselines = {"unigram": unigram_bits_per_char(text.train, text.test, vocab_size),
                 "bigram": bigram_bits_per_char(text.train, text.test, vocab_size)}
    data_parallel = parallel.DataParallel(parallel.make_mesh(jax.devices()[:1]))
    test_ids = jnp.asarray(text.test)
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    rows, runs, samples = [], {}, {}
    for cell in cells:
        model = char_lm.CharLanguageModel(cell, vocab_size, config.embedding, config.hidden)
        step = bptt.truncated_bptt_step(functools.partial(char_lm.next_character_loss, model), config.chunk_length)

        def evaluate(state, _step, model=model):
            return {"bits_per_char": float(char_lm.bits_per_character(model, state.params, test_ids,
                                                                       config.chunk_length))}

        runs[cell] = pathlib.Path(workdir) / cell
        started = time.perf_counter()
        state = loop.fit(ml_collections.ConfigDict(config.to_dict() | {"cell": cell}), runs[cell],
                         state=create_state(config, model, create_optimizer(config)), per_device_step=step,
                         batches=streams, data_parallel=data_parallel, num_steps=config.num_steps,
                         evaluate=evaluate)
        seconds = time.perf_counter() - started
        samples[cell] = write_samples(config, model, state.params, text, temperatures)
        rows.append([LABELS[cell], parameter_total(state.params),
                     last_record(runs[cell], "train")["loss"] / math.log(2),
                     last_record(runs[cell], "eval")["bits_per_char"], round(seconds, 1)])
    rows += [[f"{name} (add-one)", None, None, bits, None] for name, bits in baselines.items()]
    table = report.Table(
        f"character language models: {config.num_steps} steps of {config.batch_size} × {config.chunk_length} "
        "characters each",
        ["model", "parameters", "train bits/char", "test bits/char", "seconds (this run)"], rows)
    for cell, by_temperature in samples.items():
        for temperature, sample_text in by_temperature.items():
            print(f"--- {LABELS[cell]}, temperature {temperature} ---\n{sample_text}")
    plots = [plot(runs, baselines, pathlib.Path(workdir) / "bits_per_char.png")]
    return report.finish(workdir, table, plots=plots, summary={
        "vocabulary_size": vocab_size, "train_characters": len(text.train), "test_characters": len(text.test),
        "unigram_bits_per_char": baselines["unigram"], "bigram_bits_per_char": baselines["bigram"],
        "samples": samples})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
