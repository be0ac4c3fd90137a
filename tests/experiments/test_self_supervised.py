"""What the SimCLR and MoCo experiments share: the encoder from the config, and the end of a run
(the comparison table, results.json and the saved embeddings, equal to the encoder's features)."""

import json
import types

import jax
import numpy as np

from experiments import self_supervised
from experiments.configs import simclr as simclr_config
from tests.experiments.checks import tiny
from visionax import evaluate, parallel
from visionax.data.pipeline import ArraySource
from visionax.data.subsets import stratified_fraction
from visionax.ssl.heads import ContrastiveModel, ProjectionHead, embed
from visionax.train import setup
from visionax.train.state import initial_variables


def test_encoder_is_the_configs_model_as_a_feature_extractor():
    config = simclr_config.get_config()
    model = self_supervised.encoder(config, bn_axis_name=parallel.DATA_AXIS)
    assert (model.num_classes, model.width, model.cifar_stem, model.bn_axis_name) == (None, 16, True, "data")


def test_finish_compares_writes_results_and_embeddings(tmp_path, digits_dir):
    config = tiny(simclr_config.get_config(), digits_dir)
    config.save_embeddings = True
    run = setup.setup(config)
    model = ContrastiveModel(self_supervised.encoder(config),
                             ProjectionHead(hidden_dim=8, output_dim=4, batch_norm=False))
    start = initial_variables(jax.random.PRNGKey(0), model, run.image_shape)
    trained = initial_variables(jax.random.PRNGKey(1), model, run.image_shape)
    state = types.SimpleNamespace(variables=trained, step=np.int32(5))
    (tmp_path / "metrics.jsonl").write_text("")
    results = self_supervised.finish(config, str(tmp_path), run, model, state, start, "a method")
    rows = {row["features"]: row for row in results["rows"]}
    assert set(rows) == {"raw pixels", "random encoder", "learned encoder"}
    assert results == json.loads((tmp_path / "results.json").read_text())
    features = {name: [evaluate.encoder_features(run.data_parallel, lambda v, x: embed(model, v, x), variables,
                                                 split.images, 64) for split in (run.train, run.test)]
                for name, variables in (("random encoder", start), ("learned encoder", trained))}
    features["raw pixels"] = [evaluate.pixel_features(split.images) for split in (run.train, run.test)]
    assert results["columns"] == ["features", "dimension", "kNN accuracy", "linear probe accuracy", "kNN (10% labels)",
                                  "probe (10% labels)", "kNN (1% labels)", "probe (1% labels)"]
    for name, (train, test) in features.items():
        scores = evaluate.feature_scores(train, test, run.train, run.test, run.num_classes)
        assert rows[name]["kNN accuracy"] == scores["knn_accuracy"]
        assert rows[name]["linear probe accuracy"] == scores["probe_accuracy"]
        assert rows[name]["dimension"] == train.shape[1]
        # 1% of the labels: one example of each digit (about 144 per class), the subset of the config's seed
        kept = stratified_fraction(run.train.labels, 0.01, config.seed)
        np.testing.assert_array_equal(np.bincount(run.train.labels[kept]), np.ones(10))
        subset = ArraySource(run.train.images[kept], run.train.labels[kept])
        few = evaluate.feature_scores(train[kept], test, subset, run.test, run.num_classes)
        assert (rows[name]["kNN (1% labels)"], rows[name]["probe (1% labels)"]) == (
            few["knn_accuracy"], few["probe_accuracy"])
        assert results["label_efficiency"][name]["1%"] == few
    saved = np.load(tmp_path / "embeddings.npz")
    np.testing.assert_allclose(saved["train"], features["learned encoder"][0], rtol=1e-6)
    np.testing.assert_array_equal(saved["test_labels"], run.test.labels)
    config.init_from = "somewhere"
    relabelled = self_supervised.finish(config, str(tmp_path), run, model, state, start, "a method")
    assert [row["features"] for row in relabelled["rows"]][1] == "initial encoder (init_from)"
