"""Lecture 8: model ensembles and parameter averaging — `python -m experiments.ensemble`.

Trains `config.members` copies of `config.model`, member i initialised from seed `seed + i` (and,
with `independent_orders`, reading its own batch order), side by side in one compiled program
(`visionax.ensemble`: the supervised step vmapped over the stacked members) in `<workdir>/members`;
member 0 once more alone in `<workdir>/single` (the cost of one model); and one model with a cyclic
cosine learning rate in `<workdir>/snapshot`, a checkpoint at each cycle's end. The table sets the
test accuracy and negative log-likelihood of a single model (member 0 alone; the members' mean and
spread) against the ensembles of the first 2, 4, ... members (class probabilities averaged:
p = (1/N) Σ_i softmax(s_i)), the snapshot ensemble of one run's checkpoints and the Polyak average
of each member's weights, with the seconds each took to train. The lecture: an ensemble gives "a
few percent". Writes `ensemble.png` and `results.json`.
"""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import ml_collections
import numpy as np

from visionax import cli, ensemble, report
from visionax.errors import UserError
from visionax.optim.averaging import polyak_average
from visionax.parallel import DATA_AXIS
from visionax.train import checkpoint, loop, optimizer, setup, supervised
from visionax.train.state import AveragedTrainState, create_train_state

NAME = "ensemble"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
COLUMNS = ["model", "members", "test accuracy", "accuracy std", "test NLL", "NLL std", "training seconds"]


def check_config(config: ml_collections.ConfigDict) -> list[int]:
    """The ensemble sizes of `config.ensemble_sizes`; a UserError for any bad value."""
    if config.members < 1:
        raise UserError(f"members={config.members} must be >= 1; pass e.g. --config.members=8")
    try:
        sizes = [int(part) for part in str(config.ensemble_sizes).split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= size <= config.members for size in sizes):
        raise UserError(f"ensemble_sizes={config.ensemble_sizes!r} must be comma-separated counts from 1 to "
                        f"members={config.members}; pass e.g. --config.ensemble_sizes=2,4")
    if config.snapshot_cycles < 1:
        raise UserError(f"snapshot_cycles={config.snapshot_cycles} must be >= 1; pass e.g. --config.snapshot_cycles=5")
    return sorted(set(sizes))


def create(config: ml_collections.ConfigDict, run: setup.Setup):
    """The model (BatchNorm synchronised over the mesh), the step-0 `EnsembleState` of the
    `config.members` members (each an `AveragedTrainState` seeded `seed + i`) and the ensemble's
    per-device step."""
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    model = setup.model_from_config(config, run.num_classes, bn_axis_name=DATA_AXIS)
    num_steps = config.epochs * run.batches.steps_per_epoch
    tx = optimizer.create_optimizer(config, total_steps=num_steps, steps_per_epoch=run.batches.steps_per_epoch)
    averager = polyak_average(settings.polyak_decay)
    states = [create_train_state(jax.random.PRNGKey(seed), model, tx, run.image_shape, init_from=config.init_from,
                                 state_class=AveragedTrainState,
                                 fields=lambda variables, _: {"average": averager.init(variables["params"])})
              for seed in member_seeds(config)]
    step = ensemble.ensemble_step(functools.partial(supervised.train_step, settings=settings),
                                  independent_orders=config.independent_orders)
    return model, ensemble.stack_states(states), step


def member_seeds(config: ml_collections.ConfigDict) -> list[int]:
    return [config.seed + index for index in range(config.members)]


def variables(params, batch_stats) -> dict:
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def timed_fit(config, workdir, **arguments):
    """`loop.fit(config, workdir, ...)` and the seconds it took."""
    started = time.perf_counter()
    state = loop.fit(config, workdir, **arguments)
    return state, time.perf_counter() - started


def plot(rows: dict[str, list], sizes: list[int], path: pathlib.Path) -> pathlib.Path:
    """Test accuracy (left) and NLL (right) against the number of members averaged; the single
    model's mean ± std at 1, the snapshot ensemble and the Polyak average as horizontal lines."""
    fig, axes = report.figure(1, 2, panel_size=(5.0, 3.8))
    for axis, (value, spread, label) in zip(axes[0], ((2, 3, "test accuracy"), (4, 5, "test NLL"))):
        single = rows["single"]
        axis.errorbar([1], [single[value]], yerr=[single[spread]], fmt="o", color="C0", capsize=4,
                      label="single model (mean ± std)")
        axis.plot([1, *sizes], [single[value], *(rows[f"ensemble {size}"][value] for size in sizes)], "-o",
                  color="C0", label="ensemble of the first k")
        for key, style, color in (("snapshot", "--", "C1"), ("polyak", ":", "C2")):
            axis.axhline(rows[key][value], linestyle=style, color=color, label=rows[key][0])
        axis.set_xscale("log", base=2)
        axis.set_xlabel("members averaged")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return report.save(fig, path, title="Ensembles: class probabilities averaged")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    sizes = check_config(config)
    run = setup.setup(config)
    steps_per_epoch = run.batches.steps_per_epoch
    num_steps = config.epochs * steps_per_epoch
    cycle_steps = num_steps // config.snapshot_cycles
    if cycle_steps < 1:
        raise UserError(f"snapshot_cycles={config.snapshot_cycles} exceeds the {num_steps} training steps; "
                        "pass fewer --config.snapshot_cycles or more --config.epochs")
    model, members_state, step = create(config, run)
    seeds = member_seeds(config)
    batches = ensemble.member_batches(run.batches.source, config.batch_size, seeds,
                                      independent_orders=config.independent_orders)
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    single_state = create_train_state(jax.random.PRNGKey(seeds[0]), model, members_state.members.tx, run.image_shape,
                                      init_from=config.init_from)
    snapshot_tx = ensemble.snapshot_optimizer(config, total_steps=num_steps, steps_per_epoch=steps_per_epoch,
                                              cycles=config.snapshot_cycles)
    snapshot_state = create_train_state(jax.random.PRNGKey(seeds[0]), model, snapshot_tx, run.image_shape,
                                        init_from=config.init_from)
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    root = pathlib.Path(workdir)
    part = lambda name, **changes: ml_collections.ConfigDict(config.to_dict() | {"part": name} | changes)  # noqa: E731
    common = dict(data_parallel=run.data_parallel, num_steps=num_steps)
    lone_step = functools.partial(supervised.train_step, settings=settings)
    members_state, members_seconds = timed_fit(part("members"), root / "members", state=members_state,
                                               per_device_step=step, batches=batches, **common)
    single_state, single_seconds = timed_fit(part("single"), root / "single", state=single_state,
                                             per_device_step=lone_step, batches=run.batches, **common)
    snapshot_config = part("snapshot", checkpoint_every=cycle_steps, keep_checkpoints=config.snapshot_cycles)
    _, snapshot_seconds = timed_fit(snapshot_config, root / "snapshot", state=snapshot_state,
                                    per_device_step=lone_step, batches=run.batches, **common)

    predict = functools.partial(supervised.predict, apply_fn=model.apply)
    logits_of = functools.partial(ensemble.member_logits, run.data_parallel, predict, images=run.test.images,
                                  batch_size=config.batch_size)
    labels = run.test.labels
    members = members_state.members
    member_logits = logits_of(variables(members.params, members.batch_stats))
    polyak_logits = logits_of(variables(members.average.params, members.batch_stats))
    single_logits = logits_of(jax.tree.map(lambda leaf: leaf[None], single_state.variables))
    steps, snapshots = ensemble.load_checkpoints(root / "snapshot")
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *snapshots)
    snapshot_logits = logits_of(variables(stacked["params"], stacked["batch_stats"]))

    count, share = config.members, members_seconds / config.members
    each, polyak = ensemble.member_metrics(member_logits, labels), ensemble.member_metrics(polyak_logits, labels)
    lone = ensemble.ensemble_metrics(single_logits, labels)
    snapshot = ensemble.ensemble_metrics(snapshot_logits, labels)
    last_snapshot = ensemble.ensemble_metrics(snapshot_logits[-1:], labels)
    rows = {"lone": ["single model: member 0 trained alone", 1, lone["accuracy"], None, lone["nll"], None,
                     single_seconds],
            "single": [f"single model: mean of the {count} members", 1, float(each["accuracy"].mean()),
                       float(each["accuracy"].std()), float(each["nll"].mean()), float(each["nll"].std()), share]}
    for size in sizes:
        metrics = ensemble.ensemble_metrics(member_logits[:size], labels)
        rows[f"ensemble {size}"] = [f"ensemble of members 0–{size - 1}", size, metrics["accuracy"], None,
                                    metrics["nll"], None, share * size]
    rows["snapshot"] = [f"snapshot ensemble: {len(steps)} checkpoints of one run (cyclic cosine)", len(steps),
                        snapshot["accuracy"], None, snapshot["nll"], None, snapshot_seconds]
    rows["last snapshot"] = ["snapshot run: its last checkpoint alone", 1, last_snapshot["accuracy"], None,
                             last_snapshot["nll"], None, snapshot_seconds]
    rows["polyak"] = [f"Polyak average (decay {config.polyak_decay}): mean of the {count} members", 1,
                      float(polyak["accuracy"].mean()), float(polyak["accuracy"].std()), float(polyak["nll"].mean()),
                      float(polyak["nll"].std()), share]
    table = report.Table(
        f"{config.model} on {run.spec.name}: {num_steps} steps a model, {count} members vmapped "
        f"({'independent' if config.independent_orders else 'one'} batch order{'s' if config.independent_orders else ''}), "
        f"{run.data_parallel.device_count} device(s); seconds of this process (a member: its share of the vmapped run)",
        COLUMNS, list(rows.values()))
    plots = [plot(rows, sizes, root / "ensemble.png")]
    summary = {"members": count, "independent_orders": config.independent_orders, "snapshot_steps": steps,
               "members_seconds": members_seconds, "single_seconds": single_seconds,
               "train_examples": len(run.batches.source), "test_examples": len(labels)}
    if f"ensemble {min(4, count)}" in rows:
        best = rows[f"ensemble {min(4, count)}"]
        summary |= {"ensemble_accuracy_gain": best[2] - rows["single"][2], "ensemble_nll_gain": rows["single"][4] - best[4]}
    return report.finish(workdir, table, plots=plots, summary=summary)


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
