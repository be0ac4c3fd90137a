"""init_from: the encoder of another run's newest checkpoint is copied exactly; a classifier head
that differs stays freshly initialised; another architecture is a one-line error."""

import flax.traverse_util
import jax
import numpy as np
import optax
import pytest

from visionax.errors import UserError
from visionax.models import get_model
from visionax.ssl.heads import ContrastiveModel, ProjectionHead
from visionax.train import checkpoint
from visionax.train.pretrained import load_pretrained
from visionax.train.state import create_train_state, initial_variables

SHAPE = (8, 8, 1)


def small_cnn(num_classes):
    return get_model("small_cnn", num_classes=num_classes, widths=(4, 8, 8))


def trained_workdir(tmp_path, model, seed=1):
    """A workdir whose checkpoint holds `model`'s variables shifted away from any initialisation."""
    state = create_train_state(jax.random.PRNGKey(seed), model, optax.sgd(0.1), SHAPE)
    state = state.replace(params=jax.tree.map(lambda p: p + 0.25, state.params),
                          batch_stats=jax.tree.map(lambda s: s + 0.5, state.batch_stats))
    manager = checkpoint.manager(tmp_path, keep=1, every=1)
    checkpoint.save(manager, state)
    manager.close()
    return state


def flat(tree):
    return flax.traverse_util.flatten_dict(jax.device_get(tree))


def test_supervised_to_another_number_of_classes_loads_all_but_the_head(tmp_path, capsys):
    source = trained_workdir(tmp_path, small_cnn(10))
    target = initial_variables(jax.random.PRNGKey(7), small_cnn(3), SHAPE)
    loaded = load_pretrained(target, str(tmp_path))
    for collection in ("params", "batch_stats"):
        for path, leaf in flat(loaded[collection]).items():
            expected = (flat(target[collection]) if path[0] == "head" else flat(getattr(source, collection)))[path]
            np.testing.assert_array_equal(leaf, expected)
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"init_from {tmp_path} (step 0): loaded ") and "freshly initialised: head/" in line


def test_contrastive_encoder_to_a_classifier_and_back(tmp_path):
    contrastive = ContrastiveModel(small_cnn(None), ProjectionHead(hidden_dim=6, output_dim=5, batch_norm=False))
    source = trained_workdir(tmp_path / "ssl", contrastive)
    classifier = initial_variables(jax.random.PRNGKey(2), small_cnn(10), SHAPE)
    loaded = load_pretrained(classifier, str(tmp_path / "ssl"))
    for path, leaf in flat(loaded["params"]).items():
        expected = flat(classifier["params"])[path] if path[0] == "head" else flat(source.params["encoder"])[path]
        np.testing.assert_array_equal(leaf, expected)
    # a supervised encoder into a contrastive model: its projection head stays fresh
    supervised = trained_workdir(tmp_path / "supervised", small_cnn(10))
    target = initial_variables(jax.random.PRNGKey(3), contrastive, SHAPE)
    loaded = load_pretrained(target, str(tmp_path / "supervised"))
    for path, leaf in flat(loaded["params"]["encoder"]).items():
        np.testing.assert_array_equal(leaf, flat(supervised.params)[path])
    for path, leaf in flat(loaded["params"]["head"]).items():
        np.testing.assert_array_equal(leaf, flat(target["params"]["head"])[path])


def test_create_train_state_takes_init_from(tmp_path):
    source = trained_workdir(tmp_path, small_cnn(10))
    state = create_train_state(jax.random.PRNGKey(5), small_cnn(10), optax.adam(1e-3), SHAPE, init_from=str(tmp_path))
    for path, leaf in flat(state.params).items():
        np.testing.assert_array_equal(leaf, flat(source.params)[path])


def test_another_architecture_is_a_user_error(tmp_path):
    trained_workdir(tmp_path, small_cnn(10))
    wider = initial_variables(jax.random.PRNGKey(0), get_model("small_cnn", num_classes=10, widths=(4, 8, 16)), SHAPE)
    with pytest.raises(UserError, match=r"init_from .*: the encoder tensor .* is of shape .*use the --config.model"):
        load_pretrained(wider, str(tmp_path))
    with pytest.raises(UserError, match="holds no checkpoints"):
        load_pretrained(wider, str(tmp_path / "missing"))
