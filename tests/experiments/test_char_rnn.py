"""`python -m experiments.char_rnn`: the vanilla RNN, LSTM and GRU trained by truncated BPTT on a text,
held out against its unigram and bigram baselines, sampled at several temperatures, resumed exactly."""

import json
import math
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from PIL import Image

from experiments import char_rnn
from experiments.configs.char_rnn import get_config
from tests.experiments.checks import assert_command_line_error
from visionax import cli
from visionax.data.text import EncodedText, bigram_bits_per_char, unigram_bits_per_char
from visionax.models import char_lm
from visionax.train import checkpoint
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A 40-character random word repeated: a model that remembers a few characters predicts it almost
# exactly, while a character's successor alone leaves about 1.5 bits (the bigram baseline).
WORD = "".join(np.random.default_rng(0).choice(list("abcdefghij klmnop"), 40))
PERIODS = 80  # 3,200 characters: 2,880 for training (8 streams of 360), 320 held out
PROMPT = WORD[:6]


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory):
    """(text_file, data_dir) of the repeated word, prepared once."""
    folder = tmp_path_factory.mktemp("char_text")
    text_file = folder / "pattern.txt"
    text_file.write_text(WORD * PERIODS)
    return str(text_file), str(folder / "tfds")


def small_config(text_setup, **changes):
    config = get_config()
    config.data.text_file, config.data.data_dir = text_setup
    config.embedding, config.hidden = 8, 32
    config.batch_size, config.chunk_length = 8, 16  # 22 chunks a pass over the streams
    config.num_steps, config.learning_rate = 150, 1e-2
    config.log_every, config.eval_every, config.checkpoint_every = 5, 75, 1000
    config.sample_prompt, config.sample_length, config.sample_temperatures = PROMPT, 40, "0,1"
    config.update(changes)
    return config


@pytest.fixture(scope="module")
def run(tmp_path_factory, text_setup):
    config = small_config(text_setup)
    workdir = tmp_path_factory.mktemp("char_rnn")
    return char_rnn.train_and_evaluate(config, str(workdir)), workdir, config


def rows(results):
    return {row["model"]: row for row in results["rows"]}


def trained_model(config, cell="lstm"):
    return char_lm.CharLanguageModel(cell, len(set(WORD)) + 1, config.embedding, config.hidden)


def test_lstm_and_gru_beat_the_bigram_baseline_by_more_than_a_bit(run, text_setup):
    results, workdir, config = run
    table = rows(results)
    text = EncodedText.from_config(config.data)
    bigram = bigram_bits_per_char(text.train, text.test, text.vocabulary.size)
    assert table["bigram (add-one)"]["test bits/char"] == results["bigram_bits_per_char"] == bigram
    assert table["unigram (add-one)"]["test bits/char"] == unigram_bits_per_char(text.train, text.test, text.vocabulary.size)
    assert 1.3 < bigram < 1.7  # each character has a few successors in the word
    for model in ("LSTM", "GRU"):
        assert table[model]["test bits/char"] < bigram - 1.0, table[model]
    for model in ("vanilla RNN", "LSTM", "GRU"):
        assert table[model]["train bits/char"] < bigram - 1.0, table[model]
        assert table[model]["parameters"] > 0
    # Every cell trained in its own workdir; the held-out points at 75 and 150 steps in its metrics.
    for cell in ("rnn", "lstm", "gru"):
        records = read_metrics(workdir / cell)
        assert [r["step"] for r in records if r["split"] == "train"] == list(range(5, 151, 5))
        evaluations = [r for r in records if r["split"] == "eval"]
        assert [r["step"] for r in evaluations] == [75, 150]
        assert evaluations[-1]["bits_per_char"] < evaluations[0]["bits_per_char"]


def test_results_hold_the_table_and_samples_and_one_png(run):
    results, workdir, config = run
    assert json.loads((workdir / "results.json").read_text()) == results
    assert set(results["samples"]) == {"rnn", "lstm", "gru"}
    for by_temperature in results["samples"].values():
        assert set(by_temperature) == {"0", "1"}
        for text in by_temperature.values():
            assert text.startswith(PROMPT) and len(text) == len(PROMPT) + config.sample_length
    # Greedy decoding of a trained LSTM continues the word as it is written.
    assert results["samples"]["lstm"]["0"] == (WORD * 3)[: len(PROMPT) + config.sample_length]
    image = np.asarray(Image.open(workdir / "bits_per_char.png"))
    assert image.std() > 10
    assert list(workdir.glob("*.png")) == [workdir / "bits_per_char.png"]


def test_held_out_bits_equal_a_float64_computation_from_the_logits(run):
    """The reported number, and the chunked scan at another chunk length (padded), equal
    −mean log₂ softmax(logits)[next id] of one pass over the test ids in NumPy float64."""
    results, workdir, config = run
    model = trained_model(config)
    params = checkpoint.load_variables(workdir / "lstm")[0]["params"]
    test = EncodedText.from_config(config.data).test
    _, logits = model.apply({"params": params}, model.initialize_carry(1), jnp.asarray(test[None, :-1]))
    logits = np.asarray(logits[0], np.float64)
    log_probabilities = logits - logits.max(1, keepdims=True)
    log_probabilities -= np.log(np.exp(log_probabilities).sum(1, keepdims=True))
    expected = -np.mean(log_probabilities[np.arange(len(test) - 1), test[1:]]) / math.log(2)
    assert rows(results)["LSTM"]["test bits/char"] == pytest.approx(expected, rel=1e-5)
    chunked = char_lm.bits_per_character(model, params, jnp.asarray(test), 7)  # 319 = 45·7 + 4
    assert float(chunked) == pytest.approx(expected, rel=1e-5)


def test_greedy_sampling_equals_argmax_decoding_and_temperature_divides_the_logits(run):
    _, workdir, config = run
    model = trained_model(config)
    params = checkpoint.load_variables(workdir / "lstm")[0]["params"]
    prompt = jnp.asarray(EncodedText.from_config(config.data).vocabulary.encode(PROMPT))
    one_step = jax.jit(lambda carry, ids: model.apply({"params": params}, carry, ids))
    carry, logits = one_step(model.initialize_carry(1), prompt[None, :])
    first_logits, expected = np.asarray(logits[0, -1]), []
    for _ in range(20):  # argmax decoding, one character at a time
        expected.append(int(np.argmax(logits[0, -1])))
        carry, logits = one_step(carry, jnp.asarray([[expected[-1]]]))
    key = jax.random.PRNGKey(3)
    greedy = char_lm.sample(model, params, prompt, key, 0.0, length=20)
    np.testing.assert_array_equal(np.asarray(greedy), expected)
    np.testing.assert_array_equal(np.asarray(char_lm.sample(model, params, prompt, key, 1e-3, length=20)), expected)
    # At temperature T the first character is drawn from softmax(logits / T): frequencies of 8,000 draws.
    temperature = 4.0
    draws = jax.vmap(lambda k: char_lm.sample(model, params, prompt, k, temperature, length=20)[0])(
        jax.random.split(key, 8000))
    frequencies = np.bincount(np.asarray(draws), minlength=len(first_logits)) / 8000
    np.testing.assert_allclose(frequencies, np.asarray(jax.nn.softmax(first_logits / temperature)), atol=0.02)
    assert frequencies.max() < 0.9  # flattened: the greedy choice is not the only one drawn


class Interrupted(Exception):
    """Stands for a kill: raised by the batches before a given step."""


def final_state(workdir):
    manager = ocp.CheckpointManager((workdir / "checkpoints").absolute())
    return jax.tree.map(np.asarray, manager.restore(manager.latest_step()))


def test_a_resumed_run_ends_as_the_uninterrupted_one_and_reads_only_the_later_chunks(
        tmp_path, text_setup, monkeypatch, capsys):
    """30 steps of the GRU (a wrap to position 0 after 22 chunks) stopped before step 27, with
    checkpoints every 5 steps: the restart resumes from step 25 with its carry and position, reads
    the chunks of steps 25..29 only, and ends with the uninterrupted run's params, carry, position
    and bits per character."""
    config = small_config(text_setup, cells="gru", num_steps=30, log_every=1, checkpoint_every=5, eval_every=0)
    straight = char_rnn.train_and_evaluate(config, str(tmp_path / "straight"))
    steps_read, interrupt_at = [], [27]
    original = char_rnn.TextStreams.host_batch

    def interrupted_host_batch(self, step):
        if step in interrupt_at:
            interrupt_at.clear()  # once: the restart runs to the end
            raise Interrupted
        steps_read.append(step)
        return original(self, step)

    monkeypatch.setattr(char_rnn.TextStreams, "host_batch", interrupted_host_batch)
    with pytest.raises(Interrupted):
        char_rnn.train_and_evaluate(config, str(tmp_path / "resumed"))
    saved = checkpoint.load_variables(tmp_path / "resumed" / "gru")[1]
    assert saved == 25
    steps_read.clear()
    capsys.readouterr()
    resumed = char_rnn.train_and_evaluate(config, str(tmp_path / "resumed"))
    assert steps_read == [25, 26, 27, 28, 29]
    assert f"resumed from step 25 ({tmp_path / 'resumed' / 'gru'})" in capsys.readouterr().out
    records = read_metrics(tmp_path / "resumed" / "gru")
    assert [r["step"] for r in records if r["split"] == "resume"] == [25]
    positions = [r["position"] for r in records if r["split"] == "train"]
    assert positions == [16 * (step % 22) for step in range(30)]  # chunk of step s at 16·(s mod 22)
    assert positions == [r["position"] for r in read_metrics(tmp_path / "straight" / "gru") if r["split"] == "train"]
    expected, actual = final_state(tmp_path / "straight" / "gru"), final_state(tmp_path / "resumed" / "gru")
    assert int(actual["position"]) == 16 * (30 % 22) and int(actual["step"]) == 30
    assert np.abs(actual["carry"]).sum() > 0
    chex.assert_trees_all_equal(actual["params"], expected["params"])
    chex.assert_trees_all_equal(actual["carry"], expected["carry"])
    chex.assert_trees_all_equal(actual["opt_state"], expected["opt_state"])
    for column in ("train bits/char", "test bits/char"):
        assert rows(resumed)["GRU"][column] == rows(straight)["GRU"][column]
    assert resumed["samples"] == straight["samples"]


def test_kill_9_and_restart_keeps_the_carry_and_the_text_position(tmp_path, text_setup, capsys):
    """A real run of the GRU killed with SIGKILL after its checkpoint of step 100, started again with
    the same flags (in this process): it resumes from its last checkpoint and ends with the
    uninterrupted run's params, carry and position, having logged each step's chunk position once."""
    text_file, data_dir = text_setup
    flags = ["--config.cells=gru", f"--config.data.text_file={text_file}", f"--config.data.data_dir={data_dir}",
             "--config.embedding=8", "--config.hidden=32", "--config.batch_size=8", "--config.chunk_length=16",
             "--config.num_steps=600", "--config.log_every=10", "--config.eval_every=0",
             "--config.checkpoint_every=100", "--config.sample_length=10"]
    interrupted = tmp_path / "interrupted"
    process = subprocess.Popen([sys.executable, "-m", "experiments.char_rnn", *flags, f"--workdir={interrupted}"],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (interrupted / "gru" / "checkpoints" / "100").exists() and process.poll() is None \
            and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    latest = max(int(path.name) for path in (interrupted / "gru" / "checkpoints").iterdir() if path.name.isdigit())
    assert 100 <= latest < 600
    capsys.readouterr()

    def run_in_process(workdir):
        return cli.run(char_rnn.train_and_evaluate, char_rnn.CONFIG, char_rnn.NAME,
                       argv=[char_rnn.NAME, *flags, f"--workdir={workdir}"])

    run_in_process(interrupted)
    assert f"resumed from step {latest} ({interrupted / 'gru'})" in capsys.readouterr().out
    run_in_process(tmp_path / "straight")
    records = read_metrics(interrupted / "gru")
    assert [r["step"] for r in records if r["split"] == "resume"] == [latest]
    straight_records = read_metrics(tmp_path / "straight" / "gru")
    train = [(r["step"], r["position"]) for r in records if r["split"] == "train"]
    assert [step for step, _ in train] == list(range(10, 601, 10))  # every record once: none lost, none twice
    assert train == [(r["step"], r["position"]) for r in straight_records if r["split"] == "train"]
    expected, actual = final_state(tmp_path / "straight" / "gru"), final_state(interrupted / "gru")
    assert int(actual["step"]) == 600 and int(actual["position"]) == int(expected["position"])
    chex.assert_trees_all_equal(actual["params"], expected["params"])
    chex.assert_trees_all_equal(actual["carry"], expected["carry"])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--config.cells=rnn,transformer"], "unknown cell 'transformer' in config.cells"),
        (["--config.data.text_file=/no/such/file.txt"], "does not exist"),
        (["--config.chunk_length=0"], "chunk_length=0 must be >= 1"),
        (["--config.batch_size=5000"], "cannot fill 5000 streams"),
        (["--config.batch_size=200"], "batch_size=200 streams of the 2880 training characters hold 14 each"),
        (["--config.sample_temperatures=0.5,-1"], "sample_temperatures='0.5,-1' must be"),
    ],
)
def test_bad_flags_fail_with_one_line(tmp_path, text_setup, flags, message, capsys):
    text_file, data_dir = text_setup
    assert_command_line_error(char_rnn, [f"--config.data.text_file={text_file}", f"--config.data.data_dir={data_dir}",
                                         *flags], tmp_path / "run", message, capsys)


def test_the_text_file_config_names_its_missing_file(tmp_path, monkeypatch, capsys):
    """experiments/configs/char_rnn_text.py reads ./input.txt unless told otherwise: absent, one line."""
    monkeypatch.chdir(tmp_path)
    config = str(pathlib.Path(char_rnn.__file__).parent / "configs" / "char_rnn_text.py")
    assert_command_line_error(char_rnn, [f"--config={config}"], tmp_path / "run", "input.txt", capsys)
