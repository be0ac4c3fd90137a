"""`python -m experiments.captioning`: four captioners trained side by side on digit strings, the
scores it reports (exact match and BLEU by length) checked against their definitions, resuming a
finished run, a caption folder as data, and bad input refused with one line."""

import json

import numpy as np
import pytest
import sacrebleu
from PIL import Image

from experiments import captioning
from experiments.configs.captioning import get_config
from tests.data.builders.test_caption_folder import make_folder
from tests.experiments.checks import assert_command_line_error
from visionax.data.captions import CaptionData, digit_vocabulary
from visionax.train.metrics import read_metrics

pytestmark = pytest.mark.long  # scheduled first: see tests/conftest.py


def small(data_dir, **changes):
    config = get_config()
    config.data.num_train, config.data.num_test = 512, 96
    config.data.data_dir = data_dir
    config.epochs = 3
    config.batch_size = 64
    config.log_every = 4
    config.eval_every = 12
    config.checkpoint_every = 12
    config.eval_examples = 48
    config.wordvec_dim, config.hidden_dim = 16, 32
    config.model_options.widths = (8, 16)
    config.transformer.update({"embed_dim": 32, "num_heads": 2, "num_layers": 1, "feedforward_dim": 32})
    config.learning_rate = 0.01
    config.update_from_flattened_dict(changes)
    return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("caption_tfds"))


@pytest.fixture(scope="module")
def run(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("captioning")
    return captioning.train_and_evaluate(small(data_dir), str(workdir)), workdir


def test_every_decoder_trains_and_the_table_is_written(run):
    results, workdir = run
    assert json.loads((workdir / "results.json").read_text()) == results
    assert [row["decoder"] for row in results["rows"]] == ["bottleneck RNN", "bottleneck LSTM", "attention LSTM",
                                                             "Transformer"]
    for name in ("rnn", "lstm", "attention_lstm", "transformer"):
        train = [record for record in read_metrics(workdir / name) if record["split"] == "train"]
        assert len(train) == 6  # 24 steps, a record every 4
        # loss sums over the caption's words (the course's convention), word_loss is per word
        assert train[-1]["word_loss"] < 0.9 * train[0]["word_loss"], name
        assert train[-1]["loss"] < train[0]["loss"], name
        # chance is 1/14 a word; <END> after the right number of words alone is worth more
        assert train[-1]["word_accuracy"] > 0.25, name
        evaluations = [record for record in read_metrics(workdir / name) if record["split"] == "eval"]
        assert [record["step"] for record in evaluations] == [12, 24]
    for row in results["rows"]:
        assert 0.0 <= row["exact match"] <= 1.0 and row["train seconds"] > 0
    assert len(results["samples"]["attention_lstm"]) == 3
    image = np.asarray(Image.open(workdir / "attention.png"))
    assert image.std() > 10
    assert (workdir / "curves.png").stat().st_size > 0


def test_exact_match_by_length_partitions_the_test_split(run, data_dir):
    """The overall rate is the mean of the per-length rates weighted by each length's share."""
    results, _ = run
    _, lengths = captioning.load_split(small(data_dir).data, "test")
    counts = np.bincount(lengths, minlength=5)[1:]
    assert counts.sum() == 96 and np.all(counts > 0)
    for row in results["rows"]:
        by_length = np.array([row[f"exact match, {k} words"] for k in (1, 2, 3, 4)])
        assert row["exact match"] == pytest.approx(float(by_length @ counts) / 96)


def test_scores_follow_their_definitions():
    vocabulary = digit_vocabulary()
    encode = lambda text: vocabulary.encode(text, 6)  # noqa: E731
    refs = [["three one four"], ["two"], ["five six"], ["seven eight nine zero"]]
    words = np.stack([encode("three one four"), encode("two"), encode("five"), encode("seven eight nine one")])
    scores = captioning.scores(vocabulary, words, refs, np.array([3, 1, 2, 4]))
    assert scores["exact_match"] == 0.5
    assert (scores["exact_match_1"], scores["exact_match_2"], scores["exact_match_3"], scores["exact_match_4"]) == \
        (1.0, 0.0, 1.0, 0.0)
    hypotheses = ["three one four", "two", "five", "seven eight nine one"]
    expected = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(hypotheses, [[group[0] for group in refs]])
    assert scores["bleu4"] == pytest.approx(expected.score)
    assert scores["bleu_3"] == pytest.approx(100.0)  # a perfect caption, by BLEU-3
    # 3 of 4 unigrams, 2 of 3 bigrams, 1 of 2 trigrams, 0 of 1 four-gram: sacrebleu's smoothing
    four = sacrebleu.metrics.BLEU(tokenize="none").corpus_score(["seven eight nine one"], [["seven eight nine zero"]])
    assert scores["bleu_4"] == pytest.approx(four.score)
    assert 0 < scores["bleu_4"] < 100


def test_references_are_grouped_by_image_and_bleu_reads_them_all():
    vocabulary = digit_vocabulary()
    pairs = CaptionData(
        np.zeros((2, 4, 4, 1), np.uint8), np.stack([vocabulary.encode(text, 6) for text in ("one two", "one", "three")]),
        np.array([0, 0, 1]), (), vocabulary)
    assert captioning.references(pairs) == [["one two", "one"], ["three"]]
    # "one" matches the image's second reference exactly
    assert captioning.bleu(["one", "three"], [["one two", "one"], ["three"]], order=1) == pytest.approx(100.0)


def test_a_finished_run_resumes_at_its_end_and_reports_the_same(tmp_path, data_dir, capsys):
    config = small(data_dir, decoders="attention_lstm", epochs=1, eval_every=0)
    first = captioning.train_and_evaluate(config, str(tmp_path))
    again = captioning.train_and_evaluate(config, str(tmp_path))
    assert f"resumed from step 8 ({tmp_path / 'attention_lstm'})" in capsys.readouterr().out
    for key in ("exact match", "BLEU-4", "beam 3 exact match"):
        assert again["rows"][0][key] == first["rows"][0][key]
    assert again["samples"] == first["samples"]


def test_a_caption_folder_trains_with_its_word_vocabulary(tmp_path):
    listings = {"train": {f"{k}.png": ["a red square", "red square"] if k % 2 else ["a blue circle"]
                          for k in range(16)},
                "test": {"t0.png": ["a red square"], "t1.png": ["a blue circle", "blue circle"]}}
    make_folder(tmp_path / "folder", listings, size=(12, 12))
    config = small(str(tmp_path / "tfds"), decoders="lstm", epochs=2, batch_size=8, eval_every=0,
                   max_length=6, **{"data.name": "caption_folder", "data.folder": str(tmp_path / "folder"),
                                    "data.image_size": 8, "data.max_length": 6})
    config.model_options.widths = (4, 8)
    results = captioning.train_and_evaluate(config, str(tmp_path / "run"))
    assert results["train_captions"] == 24 and results["test_images"] == 2
    assert results["references"] == [["a red square"], ["a blue circle", "blue circle"]]
    row = results["rows"][0]
    assert "exact match, 2 words" not in row and "exact match, 3 words" in row  # grouped by first reference


@pytest.mark.parametrize("flag, message", [
    ("--config.decoders=lstm,gru", "unknown decoder 'gru'"),
    ("--config.data.name=coco", "unknown caption dataset 'coco'"),
    ("--config.data.name=caption_folder", "needs a folder"),
    ("--config.max_length=4", "exceed max_length=4"),
    ("--config.batch_size=5000", "batch_size=5000 exceeds"),
    ("--config.beam_size=0", "beam_size=0 must be >= 1"),
])
def test_bad_flags_fail_with_one_line(tmp_path, flag, message, data_dir, capsys):
    flags = [flag, "--config.data.num_train=512", "--config.data.num_test=96", f"--config.data.data_dir={data_dir}"]
    assert_command_line_error(captioning, flags, tmp_path / "run", message, capsys)
