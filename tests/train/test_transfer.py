"""Transfer learning: stages pick exactly their parameter paths; frozen parameters and BatchNorm
statistics stay bit-identical (8 devices); the fixed feature extractor's head follows softmax
regression on the frozen features (float64 NumPy); trained pretrained layers move by the multiplier
× the head's update (exactly, SGD and Adam; Adam also against optax at m·ε); bad settings are one line."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from visionax import parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.losses.classification import softmax_cross_entropy
from visionax.models import get_model
from visionax.ssl.heads import ContrastiveModel, ProjectionHead
from visionax.train import checkpoint, supervised, transfer
from visionax.train.optimizer import create_optimizer
from visionax.train.state import create_train_state

SHAPE = (8, 8, 1)
WIDTHS = (4, 8, 8)
CLASSES = 5


def small_cnn(num_classes=CLASSES):
    return get_model("small_cnn", num_classes=num_classes, widths=WIDTHS)


def random_like(tree, seed):
    leaves, structure = jax.tree.flatten(tree)
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree.unflatten(structure, [jax.random.normal(key, leaf.shape) for key, leaf in zip(keys, leaves)])


def pretrained(workdir, model, seed=1):
    """A workdir whose checkpoint holds `model`'s variables moved away from any initialisation."""
    state = create_train_state(jax.random.PRNGKey(seed), model, optax.sgd(0.1), SHAPE)
    noise = jax.tree.map(lambda leaf: 0.1 * leaf, random_like(state.params, seed + 1))
    statistics = jax.tree_util.tree_map_with_path(
        lambda path, stats: stats - 0.05 if path[-1].key == "mean" else 1.5 * stats, state.batch_stats)
    state = state.replace(params=jax.tree.map(jnp.add, state.params, noise), batch_stats=statistics)
    manager = checkpoint.manager(workdir, keep=1, every=1)
    checkpoint.save(manager, state)
    manager.close()
    return state


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pretrained")
    return workdir, pretrained(workdir, small_cnn())


def transfer_config(workdir, mode, stages=1, multiplier=1.0, model="small_cnn"):
    return ml_collections.ConfigDict({"seed": 0, "model": model, "init_from": str(workdir), "finetune": mode,
                                      "finetune_stages": stages, "backbone_lr_multiplier": multiplier})


def batches(count=64, batch_size=16):
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (count, *SHAPE), dtype=np.uint8)
    return Batches(ArraySource(images, generator.integers(0, CLASSES, count).astype(np.int32)), batch_size, seed=0)


def run_steps(state, step, data_parallel, data, count):
    compiled = data_parallel.step(step, donate=False)
    placed = data_parallel.put_state(state)
    for index in range(count):
        placed, _ = compiled(placed, data_parallel.put_batch(data.host_batch(index)))
    return jax.device_get(data_parallel.get_state(placed))


def assert_equal_trees(left, right):
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(left), jax.device_get(right))


def test_stages_pick_exactly_their_parameter_paths():
    resnet = get_model("resnet18", num_classes=CLASSES, width=4, cifar_stem=True)
    params = create_train_state(jax.random.PRNGKey(0), resnet, optax.sgd(0.1), SHAPE).params
    assert transfer.stages("resnet18", params) == [
        ["bn1", "conv1"], ["layer1_0", "layer1_1"], ["layer2_0", "layer2_1"], ["layer3_0", "layer3_1"],
        ["layer4_0", "layer4_1"]]
    groups = transfer.parameter_groups("resnet18", params, transfer.Transfer("top", 2))
    assert sorted(name for name, group in groups.items() if group == transfer.BACKBONE) == [
        "layer3_0", "layer3_1", "layer4_0", "layer4_1"]
    assert sorted(name for name, group in groups.items() if group == transfer.FROZEN) == [
        "bn1", "conv1", "layer1_0", "layer1_1", "layer2_0", "layer2_1"]
    assert groups["head"] == "head"
    cnn = create_train_state(jax.random.PRNGKey(0), small_cnn(), optax.sgd(0.1), SHAPE).params
    assert transfer.stages("small_cnn", cnn) == [
        ["BatchNorm_0", "Conv_0"], ["BatchNorm_1", "Conv_1"], ["BatchNorm_2", "Conv_2"]]
    linear = transfer.parameter_groups("small_cnn", cnn, transfer.Transfer("linear"))
    every = transfer.parameter_groups("small_cnn", cnn, transfer.Transfer("all"))
    assert {name for name, group in linear.items() if group != transfer.FROZEN} == {"head"}
    assert {name for name, group in every.items() if group == transfer.BACKBONE} == set(cnn) - {"head"}
    with pytest.raises(UserError, match=r"finetune_stages=4 exceeds the 3 stages of small_cnn; pass "
                                        r"--config.finetune_stages=1..3"):
        transfer.parameter_groups("small_cnn", cnn, transfer.Transfer("top", 4))
    with pytest.raises(UserError, match=r"defined for resnet18, .*small_cnn, not 'vgg11'"):
        transfer.stages("vgg11", cnn)


def group_params(params, groups, group):
    return {name: subtree for name, subtree in params.items() if groups[name] == group}


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_frozen_get_nothing_and_the_backbone_the_multiplier_times_the_head_optimizer(name):
    """Three updates on fixed random gradients: the frozen leaves do not move, the head's are the
    config's optimizer (masked weight decay included) on the head alone, the backbone's are exactly
    m × that optimizer's on the backbone alone."""
    config = ml_collections.ConfigDict({"learning_rate": 0.05, "scale_learning_rate": False, "schedule": "constant",
                                        "warmup_epochs": 0, "weight_decay": 0.01, "weight_decay_mask": "weights",
                                        "batch_size": 16})
    tx = create_optimizer(config, total_steps=10, steps_per_epoch=5, optimizer=name)
    params = create_train_state(jax.random.PRNGKey(0), small_cnn(), optax.sgd(0.1), SHAPE).params
    groups = transfer.parameter_groups("small_cnn", params, transfer.Transfer("top", 1))
    multiplier = 0.1
    combined = transfer.create_optimizer(tx, groups, multiplier)
    state = combined.init(params)
    references = {group: (group_params(params, groups, group), tx.init(group_params(params, groups, group)))
                  for group in (transfer.HEAD, transfer.BACKBONE)}
    updated = params
    for index in range(3):
        grads = random_like(params, index)
        updates, state = combined.update(grads, state, updated)
        updated = optax.apply_updates(updated, updates)
        for group, (group_tree, group_state) in references.items():
            group_updates, group_state = tx.update(group_params(grads, groups, group), group_state, group_tree)
            if group == transfer.BACKBONE:
                group_updates = jax.tree.map(lambda update: multiplier * update, group_updates)
            references[group] = (optax.apply_updates(group_tree, group_updates), group_state)
            if index == 0 and name == "sgd" and group == transfer.HEAD:  # closed form: -ε(g + λW) on kernels only
                head = grads["head"]
                np.testing.assert_allclose(group_updates["head"]["kernel"],
                                           -0.05 * (head["kernel"] + 0.01 * params["head"]["kernel"]), rtol=1e-6)
                np.testing.assert_allclose(group_updates["head"]["bias"], -0.05 * head["bias"], rtol=1e-6)
    assert_equal_trees(group_params(updated, groups, transfer.FROZEN), group_params(params, groups, transfer.FROZEN))
    for group, (group_tree, _) in references.items():
        assert_equal_trees(group_params(updated, groups, group), group_tree)
    if name == "adam":  # m × Adam(ε) = Adam(m·ε): the multiplier is the backbone's learning rate
        plain = create_optimizer(config.copy_and_resolve_references(), total_steps=10, steps_per_epoch=5,
                                 optimizer="adam", learning_rate=0.05 * multiplier)
        backbone = group_params(params, groups, transfer.BACKBONE)
        plain_state = plain.init(backbone)
        for index in range(3):
            grads = group_params(random_like(params, index), groups, transfer.BACKBONE)
            plain_updates, plain_state = plain.update(grads, plain_state, backbone)
            backbone = optax.apply_updates(backbone, plain_updates)
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-7), backbone,
                     group_params(updated, groups, transfer.BACKBONE))


def softmax_regression(features, labels, weights, bias, learning_rate):
    """One float64 gradient-descent step of softmax cross-entropy on fixed `features` `[n, d]`."""
    logits = features @ weights + bias
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    residual = (probabilities - np.eye(weights.shape[1])[labels]) / len(labels)
    return weights - learning_rate * features.T @ residual, bias - learning_rate * residual.sum(axis=0)


def test_the_feature_extractor_trains_softmax_regression_on_frozen_features(source, capsys):
    """finetune=linear on 8 devices, the shipped supervised step: every pretrained parameter and
    BatchNorm statistic bit-identical after 4 steps, and the head equal to softmax regression
    trained by SGD on the pretrained network's evaluation-mode features."""
    workdir, pretrained_state = source
    learning_rate, data = 0.5, batches()
    step = functools.partial(supervised.train_step, settings=supervised.SupervisedSettings(num_classes=CLASSES))
    state, step = transfer.create(transfer_config(workdir, "linear"), small_cnn(), optax.sgd(learning_rate), SHAPE,
                                  step)
    assert "finetune=linear: head freshly initialised" in capsys.readouterr().out
    fresh = create_train_state(jax.random.PRNGKey(0), small_cnn(), optax.sgd(0.1), SHAPE)
    assert_equal_trees(state.params["head"], fresh.params["head"])
    final = run_steps(state, step, parallel.DataParallel(parallel.make_mesh(), "shard_map"), data, 4)
    assert_equal_trees({name: leaf for name, leaf in final.params.items() if name != "head"},
                       {name: leaf for name, leaf in pretrained_state.params.items() if name != "head"})
    assert_equal_trees(final.batch_stats, pretrained_state.batch_stats)
    features = np.asarray(small_cnn(None).apply(
        {"params": {name: leaf for name, leaf in pretrained_state.params.items() if name != "head"},
         "batch_stats": pretrained_state.batch_stats}, model_input(data.source.images), train=False), np.float64)
    weights, bias = (np.asarray(state.params["head"][key], np.float64) for key in ("kernel", "bias"))
    for index in range(4):
        chosen = data.indices(index)
        weights, bias = softmax_regression(features[chosen], data.source.labels[chosen], weights, bias, learning_rate)
    np.testing.assert_allclose(final.params["head"]["kernel"], weights, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(final.params["head"]["bias"], bias, rtol=1e-4, atol=1e-6)
    assert np.abs(weights - np.asarray(state.params["head"]["kernel"])).max() > 1e-2  # the head did learn


def test_top_stages_train_with_batch_statistics_at_the_multiplied_rate(source):
    """finetune=top, 1 stage, multiplier 0.1, SGD, one shipped step on one device: the frozen
    BatchNorm layers compute their evaluation-mode outputs, the trained one its batch statistics;
    the update is −ε·g for the head and −0.1·ε·g for the last stage, on the gradient of the same
    loss; nothing else moves."""
    workdir, pretrained_state = source
    learning_rate, multiplier, data = 0.2, 0.1, batches()
    step = functools.partial(supervised.train_step, settings=supervised.SupervisedSettings(num_classes=CLASSES))
    state, step = transfer.create(transfer_config(workdir, "top", 1, multiplier), small_cnn(),
                                  optax.sgd(learning_rate), SHAPE, step)
    images = model_input(data.host_batch(0)["image"])
    _, captured = state.apply_fn(state.variables, images, train=True, mutable=["batch_stats"],
                                 capture_intermediates=True)
    _, evaluated = small_cnn().apply(state.variables, images, train=False, capture_intermediates=True,
                                     mutable=["intermediates"])
    for name in ("BatchNorm_0", "BatchNorm_1"):
        np.testing.assert_array_equal(captured["intermediates"][name]["__call__"][0],
                                      evaluated["intermediates"][name]["__call__"][0])
    trained = captured["intermediates"]["BatchNorm_2"]["__call__"][0]  # normalised by its batch statistics
    scale, bias = state.params["BatchNorm_2"]["scale"], state.params["BatchNorm_2"]["bias"]
    np.testing.assert_allclose(((trained - bias) / scale).mean(axis=(0, 1, 2)), 0.0, atol=1e-5)

    def loss(params):
        logits, _ = state.apply_fn({"params": params, "batch_stats": state.batch_stats}, images, train=True,
                                   mutable=["batch_stats"])
        return softmax_cross_entropy(logits, jnp.asarray(data.host_batch(0)["label"]))

    grads = jax.grad(loss)(state.params)
    final = run_steps(state, step, parallel.DataParallel(parallel.make_mesh(jax.devices()[:1]), "shard_map"), data, 1)
    rates = {"head": learning_rate, "Conv_2": multiplier * learning_rate, "BatchNorm_2": multiplier * learning_rate}
    for name, subtree in state.params.items():
        rate = rates.get(name, 0.0)
        expected = jax.tree.map(lambda leaf, grad, rate=rate: leaf - rate * grad, subtree, grads[name])
        compare = np.testing.assert_array_equal if name not in rates else functools.partial(
            np.testing.assert_allclose, rtol=1e-5, atol=1e-7)
        jax.tree.map(compare, final.params[name], expected)
    for name in ("BatchNorm_0", "BatchNorm_1"):
        assert_equal_trees(final.batch_stats[name], pretrained_state.batch_stats[name])
    moved = final.batch_stats["BatchNorm_2"]["mean"] - pretrained_state.batch_stats["BatchNorm_2"]["mean"]
    assert np.abs(moved).max() > 1e-3  # the trained stage's statistics follow its batches


def test_a_contrastive_encoder_transfers_with_a_fresh_head(tmp_path):
    """From a SimCLR/MoCo-style workdir (params {"encoder", "head": projection}): the encoder is
    loaded, the classifier head is the fresh one."""
    contrastive = ContrastiveModel(small_cnn(None), ProjectionHead(hidden_dim=6, output_dim=5, batch_norm=False))
    saved = pretrained(tmp_path, contrastive)
    state, _ = transfer.create(transfer_config(tmp_path, "all", multiplier=0.5), small_cnn(), optax.sgd(0.1), SHAPE,
                               supervised.train_step)
    fresh = create_train_state(jax.random.PRNGKey(0), small_cnn(), optax.sgd(0.1), SHAPE)
    assert_equal_trees(state.params, {**saved.params["encoder"], "head": fresh.params["head"]})
    assert_equal_trees(state.batch_stats, saved.batch_stats["encoder"])


@pytest.mark.parametrize("changes, message", [
    ({"finetune": "partial"}, "unknown finetune 'partial'; choose one of linear, top, all"),
    ({"init_from": ""}, "finetune=top starts from a pretrained run; pass --config.init_from="),
    ({"finetune_stages": 0}, "finetune_stages=0 must be a positive integer"),
    ({"backbone_lr_multiplier": 0.0}, "backbone_lr_multiplier=0.0 must be positive"),
    ({"finetune": "", "init_from": "", "backbone_lr_multiplier": 0.1}, "applies only when fine-tuning"),
    ({"finetune_stages": 9}, "finetune_stages=9 exceeds the 3 stages of small_cnn"),
    ({"model": "vgg11"}, "needs the stages of the model, defined for resnet18"),
])
def test_bad_settings_are_one_line(source, changes, message):
    config = transfer_config(source[0], "top")
    config.update(changes)
    with pytest.raises(UserError, match=message):  # vgg11: refused before its 130M parameters are initialised
        transfer.create(config, small_cnn(), optax.sgd(0.1), SHAPE, supervised.train_step)
