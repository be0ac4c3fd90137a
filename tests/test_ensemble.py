"""visionax.ensemble against independent computations: each vmapped member against the same model
trained alone (its seed, its batch order, its learning rate and weight decay), 8 devices against 1,
the averaged probabilities and their NLL and accuracy against NumPy float64, the snapshot ensemble
against the checkpoints it names, the cyclic schedule against its closed form."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from visionax import ensemble, models, optim, parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.errors import UserError
from visionax.train import checkpoint, loop, optimizer, supervised
from visionax.train.state import AveragedTrainState, create_train_state

SEEDS = (3, 4, 5)
STEPS = 3
BATCH = 16
# float32: a vmapped convolution or matrix product adds in another order than the lone one
TOLERANCE = dict(rtol=2e-5, atol=1e-6)
SETTINGS = supervised.SupervisedSettings(num_classes=5, crop_padding=1, flip_probability=0.5, polyak_decay=0.9)


def config(**changes) -> ml_collections.ConfigDict:
    """The optimizer keys `visionax.train.optimizer` reads: momentum with masked weight decay, cosine."""
    values = {"optimizer": "momentum", "learning_rate": 0.05, "scale_learning_rate": False, "schedule": "cosine",
              "warmup_epochs": 0, "weight_decay": 1e-2, "weight_decay_mask": "weights", "batch_size": BATCH}
    return ml_collections.ConfigDict(values | changes)


MODEL = models.get_model("small_cnn", num_classes=5, widths=(4, 8), bn_axis_name=parallel.DATA_AXIS)


@pytest.fixture(scope="module")
def source():
    rng = np.random.default_rng(0)
    return ArraySource(rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8), rng.integers(0, 5, 64).astype(np.int32))


def data_parallel(devices=1, impl="shard_map"):
    return parallel.DataParallel(parallel.make_mesh(jax.devices()[:devices]), impl)


def member_state(seed, tx):
    averager = optim.polyak_average(SETTINGS.polyak_decay)
    return create_train_state(jax.random.PRNGKey(seed), MODEL, tx, (8, 8, 1), state_class=AveragedTrainState,
                              fields=lambda variables, _: {"average": averager.init(variables["params"])})


def run(step, state, batches, devices=1, impl="shard_map", steps=STEPS):
    """`steps` steps of a per-device `step`: (metrics of each step, final state), on the host."""
    parallel_run = data_parallel(devices, impl)
    compiled = parallel_run.step(step, donate=False)
    placed, history = parallel_run.put_state(state), []
    for index in range(steps):
        placed, metrics = compiled(placed, parallel_run.put_batch(batches.host_batch(index)))
        history.append(jax.device_get(parallel_run.get_state(metrics)))
    return history, jax.device_get(parallel_run.get_state(placed))


TRAIN_STEP = functools.partial(supervised.train_step, settings=SETTINGS)


def ensemble_run(source, independent_orders, devices=1, impl="shard_map"):
    tx = optimizer.create_optimizer(config(), total_steps=STEPS, steps_per_epoch=4)
    state = ensemble.stack_states([member_state(seed, tx) for seed in SEEDS])
    batches = ensemble.member_batches(source, BATCH, SEEDS, independent_orders=independent_orders)
    return run(ensemble.ensemble_step(TRAIN_STEP, independent_orders=independent_orders), state, batches,
               devices, impl)


@pytest.fixture(scope="module", params=[False, True], ids=["one order", "independent orders"])
def one_device(request, source):
    return request.param, ensemble_run(source, request.param)


def test_each_vmapped_member_equals_the_model_trained_alone_with_its_seed(one_device, source):
    """Member i (seed 3 + i, crop and flip, masked weight decay, Polyak average) after 3 steps equals
    the lone run of that seed reading the first seed's batch order, or its own with independent
    orders; the ensemble's metrics are the members' losses and their mean."""
    independent_orders, (history, stacked) = one_device
    tx = optimizer.create_optimizer(config(), total_steps=STEPS, steps_per_epoch=4)
    assert isinstance(stacked, ensemble.EnsembleState) and int(stacked.step) == STEPS and stacked.size == 3
    for index, seed in enumerate(SEEDS):
        order = Batches(source, BATCH, seed if independent_orders else SEEDS[0])
        lone_history, lone = run(TRAIN_STEP, member_state(seed, tx), order)
        vmapped = ensemble.member(stacked.members, index)
        for field in ("params", "batch_stats", "opt_state", "average"):
            chex.assert_trees_all_close(getattr(vmapped, field), getattr(lone, field), **TOLERANCE)
        chex.assert_trees_all_equal(vmapped.rng, lone.rng)
        losses = [metrics[f"loss_{index}"] for metrics in history]
        np.testing.assert_allclose(losses, [metrics["loss"] for metrics in lone_history], rtol=1e-5)
    np.testing.assert_allclose(history[-1]["loss"], np.mean([history[-1][f"loss_{i}"] for i in range(3)]), rtol=1e-6)
    # the members differ: their seeds (and orders) differ
    assert not np.allclose(history[-1]["loss_0"], history[-1]["loss_1"])


@pytest.mark.parametrize("impl", ["shard_map", "pmap"])
def test_the_ensemble_step_on_8_devices_equals_1_device(impl, one_device, source):
    independent_orders, (history_one, one) = one_device
    history_eight, eight = ensemble_run(source, independent_orders, devices=8, impl=impl)
    np.testing.assert_allclose([m["loss"] for m in history_eight], [m["loss"] for m in history_one], rtol=1e-5)
    for field in ("params", "batch_stats", "opt_state", "average"):
        chex.assert_trees_all_close(getattr(eight.members, field), getattr(one.members, field), rtol=2e-4, atol=2e-6)


def numpy_log_softmax(logits):
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_ensemble_probabilities_are_the_mean_of_the_members_softmax(one_device, source):
    """member_logits equals each member's own prediction; p = mean softmax, its accuracy and NLL
    equal a float64 NumPy computation; member_metrics are ensembles of one."""
    _, (_, stacked) = one_device
    members = stacked.members
    images, labels = source.images[:40], source.labels[:40]
    predict = functools.partial(supervised.predict, apply_fn=MODEL.apply)
    logits = ensemble.member_logits(data_parallel(8), predict, members.variables, images, 16)  # 40 = 16 + 16 + 8
    assert logits.shape == (3, 40, 5)
    for index in range(3):
        alone = predict(ensemble.member(members, index).variables, jnp.asarray(images))
        np.testing.assert_allclose(logits[index], alone, rtol=1e-5, atol=1e-6)
    probabilities = np.exp(numpy_log_softmax(logits)).mean(0)
    np.testing.assert_allclose(ensemble.ensemble_probabilities(logits), probabilities, rtol=1e-5, atol=1e-7)
    metrics = ensemble.ensemble_metrics(logits, labels)
    assert metrics["accuracy"] == np.mean(probabilities.argmax(1) == labels)
    assert metrics["nll"] == pytest.approx(-np.mean(np.log(probabilities[np.arange(40), labels])), rel=1e-5)
    each = ensemble.member_metrics(logits, labels)
    for index in range(3):
        log_p = numpy_log_softmax(logits[index])
        assert each["nll"][index] == pytest.approx(-np.mean(log_p[np.arange(40), labels]), rel=1e-5)
        assert each["accuracy"][index] == np.mean(log_p.argmax(1) == labels)


def test_probabilities_are_averaged_not_the_logits():
    """Two members prefer class 0 (p = 0.88), a third is sure of class 1: the mean of the logits picks
    1 (Σ (s₀ − s₁) = 2 + 2 − 10 < 0), the mean of the probabilities picks 0 ((0.88 + 0.88 + 0.00)/3 = 0.59)."""
    logits = np.asarray([[[1.0, -1.0]], [[1.0, -1.0]], [[-5.0, 5.0]]])
    assert logits.mean(0).argmax() == 1
    probabilities = np.asarray(ensemble.ensemble_probabilities(logits))[0]
    np.testing.assert_allclose(probabilities, np.exp(numpy_log_softmax(logits)).mean(0)[0], rtol=1e-6)
    assert probabilities.argmax() == 0
    assert ensemble.ensemble_metrics(logits, np.asarray([0]))["accuracy"] == 1.0


@pytest.mark.parametrize("name", ["momentum", "adam"])
def test_a_vmapped_member_trains_with_its_own_learning_rate_and_weight_decay(source, name):
    """Members (ε, λ) = (0.05, 0.02), (0.01, 0) and (∞, 0) of one vmapped program: the first two equal
    lone runs of the config's own optimizer (`create_optimizer`, cosine schedule, masked decay) at
    their ε and λ; the third's first update is not finite, so it keeps its initial parameters
    (`frozen`) while the others train."""
    batches = Batches(source, BATCH, SEEDS[0])
    group = ensemble.member_optimizer(config(optimizer=name, weight_decay=0.5), total_steps=STEPS, steps_per_epoch=4)
    start = member_state(SEEDS[0], group)
    trials = [(0.05, 0.02), (0.01, 0.0), (float("inf"), 0.0)]
    state = ensemble.stack_states([ensemble.set_hyperparameters(start, learning_rate=rate, weight_decay=decay)
                                   for rate, decay in trials])
    history, stacked = run(ensemble.ensemble_step(TRAIN_STEP, keep_finite=True), state, batches)
    for index, (rate, decay) in enumerate(trials[:2]):
        tx = optimizer.create_optimizer(config(optimizer=name, learning_rate=rate, weight_decay=decay),
                                        total_steps=STEPS, steps_per_epoch=4)
        lone_history, lone = run(TRAIN_STEP, member_state(SEEDS[0], tx), batches)
        vmapped = ensemble.member(stacked.members, index)
        for field in ("params", "batch_stats", "average"):
            chex.assert_trees_all_close(getattr(vmapped, field), getattr(lone, field), **TOLERANCE)
        np.testing.assert_allclose([metrics[f"loss_{index}"] for metrics in history],
                                   [metrics["loss"] for metrics in lone_history], rtol=1e-5)
        assert float(vmapped.opt_state.learning_rate) == np.float32(rate)
    frozen = ensemble.member(stacked.members, 2)
    chex.assert_trees_all_equal(frozen.params, jax.device_get(start.params))
    assert [metrics["frozen"] for metrics in history] == [1.0] * STEPS
    assert [metrics["frozen_2"] for metrics in history] == [1.0] * STEPS
    assert not np.allclose(ensemble.member(stacked.members, 0).params["head"]["kernel"], start.params["head"]["kernel"])


def test_the_lars_optimizer_is_refused_for_per_member_weight_decay():
    with pytest.raises(UserError, match="LARS applies it inside"):
        ensemble.member_optimizer(config(optimizer="lars"), total_steps=1, steps_per_epoch=1)


def loop_config(**changes):
    return ml_collections.ConfigDict({"log_every": 2, "checkpoint_every": 2, "keep_checkpoints": 3,
                                      "eval_every": 0, "seed": 0} | changes)


def test_snapshot_ensemble_reads_exactly_the_checkpoints_it_names(tmp_path, source, monkeypatch):
    """An EnsembleState through loop.fit to step 4, then resumed to 8 (checkpoints every 2, 3 kept:
    4, 6, 8): the resumed run ends as an uninterrupted one; load_checkpoints reads the steps asked
    for (all kept by default) and gives the parameters the run had at those steps."""
    tx = optimizer.create_optimizer(config(), total_steps=8, steps_per_epoch=4)
    state = ensemble.stack_states([member_state(seed, tx) for seed in SEEDS[:2]])
    step = ensemble.ensemble_step(TRAIN_STEP, independent_orders=True)
    batches = ensemble.member_batches(source, BATCH, SEEDS[:2], independent_orders=True)
    fit = functools.partial(loop.fit, loop_config(), per_device_step=step, batches=batches,
                            data_parallel=data_parallel())
    at_four = fit(tmp_path / "run", state=state, num_steps=4)
    at_eight = fit(tmp_path / "run", state=state, num_steps=8)
    straight = fit(tmp_path / "straight", state=state, num_steps=8)
    chex.assert_trees_all_equal(at_eight.savable(), straight.savable())
    variables, latest = checkpoint.load_variables(tmp_path / "run")
    assert latest == 8 and jax.tree.leaves(variables["params"])[0].shape[0] == 2
    chex.assert_trees_all_equal(variables["params"], at_eight.params)

    restored_steps, original = [], ocp.CheckpointManager.restore

    def spy(self, step, *args, **kwargs):
        restored_steps.append(step)
        return original(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "restore", spy)
    steps, snapshots = ensemble.load_checkpoints(tmp_path / "run", (8, 4))
    assert steps == [4, 8] and restored_steps == [4, 8]
    chex.assert_trees_all_equal(snapshots[0]["params"], at_four.params)
    chex.assert_trees_all_equal(snapshots[1]["batch_stats"], at_eight.members.batch_stats)
    restored_steps.clear()
    assert ensemble.load_checkpoints(tmp_path / "run")[0] == [4, 6, 8] and restored_steps == [4, 6, 8]
    with pytest.raises(UserError, match="no checkpoint of step 5 .* at steps 4, 6, 8"):
        ensemble.load_checkpoints(tmp_path / "run", (4, 5))
    with pytest.raises(UserError, match="holds no checkpoints"):
        ensemble.load_checkpoints(tmp_path / "none")


def test_cyclic_cosine_restarts_every_cycle_and_scales_the_updates():
    """c_t = ½(1 + cos(π (t mod T)/T)) for T = 4; the snapshot optimizer's update is the constant-rate
    optimizer's times c_t (SGD: −ε c_t g)."""
    schedule = ensemble.cyclic_cosine(4)
    t = np.arange(12)
    expected = 0.5 * (1 + np.cos(np.pi * (t % 4) / 4))
    np.testing.assert_allclose([float(schedule(step)) for step in t], expected, rtol=1e-6, atol=1e-7)
    tx = ensemble.snapshot_optimizer(config(optimizer="sgd", weight_decay=0.0), total_steps=12, steps_per_epoch=4,
                                     cycles=3)
    gradient = {"w": jnp.asarray([1.0, -2.0])}
    state = tx.init(gradient)
    for step in t:
        update, state = tx.update(gradient, state, gradient)
        np.testing.assert_allclose(update["w"], -0.05 * expected[step] * np.asarray([1.0, -2.0]), rtol=1e-6, atol=1e-8)
    with pytest.raises(UserError, match="cycle of 0 steps"):
        ensemble.cyclic_cosine(0)


def test_member_batches_stack_each_seeds_order(source):
    independent = ensemble.member_batches(source, BATCH, (1, 2), independent_orders=True)
    batch = independent.host_batch(5)
    assert batch["image"].shape == (BATCH, 2, 8, 8, 1)
    for index, seed in enumerate((1, 2)):
        alone = Batches(source, BATCH, seed).host_batch(5)
        np.testing.assert_array_equal(batch["image"][:, index], alone["image"])
        np.testing.assert_array_equal(batch["label"][:, index], alone["label"])
    shared = ensemble.member_batches(source, BATCH, (1, 2), independent_orders=False)
    np.testing.assert_array_equal(shared.host_batch(5)["label"], Batches(source, BATCH, 1).host_batch(5)["label"])

