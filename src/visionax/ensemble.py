"""Ensembles and averaging (lecture 8): N independently initialised models trained in one compiled
program, their predictions averaged in probability space, snapshot ensembles from the checkpoints
of one run, and members that differ only in their hyperparameters (a vmapped search).

- `EnsembleState` holds N train states stacked along a leading `[members]` axis; `ensemble_step`
  runs any per-device step (e.g. `visionax.train.supervised.train_step`) on each member with
  `jax.vmap`, inside the per-device step, so the ensemble still runs under `DataParallel` on any
  number of devices and through `visionax.train.loop.fit` (checkpoints, resume) as one model does.
- Batch orders: every member reads the same batch `[batch, ...]` (`Batches` of the run's seed), or
  each its own permutation (`MemberBatches`: `[batch, members, ...]`, the batch axis first because
  `DataParallel` splits axis 0 over the devices).
- The ensemble predicts p(y|x) = (1/N) Σ_i softmax(s_i(x)) (`ensemble_probabilities`); its accuracy
  is that of argmax_y p and its negative log-likelihood −mean log p(y|x) (`ensemble_metrics`).
- A snapshot ensemble (Huang et al. 2017) averages the checkpoints of one run
  (`load_checkpoints`); `cyclic_cosine` restarts the learning rate each cycle so that the
  snapshots differ. The Polyak average of one run is kept by `AveragedTrainState`.
- `member_optimizer` moves the learning rate ε and the weight decay λ into the optimizer state, so
  members of one vmapped program can train with different values (`set_hyperparameters`).
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Callable, NamedTuple, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from visionax import registry
from visionax.data.pipeline import Batches
from visionax.errors import UserError
from visionax.evaluate.batches import map_over_batches
from visionax.parallel import DataParallel, Step
from visionax.train import optimizer
from visionax.train.checkpoint import CHECKPOINT_DIR
from visionax.train.state import TrainState

__all__ = ["EnsembleState", "stack_states", "member", "ensemble_step", "MemberBatches", "member_batches",
           "member_logits", "ensemble_probabilities", "ensemble_metrics", "member_metrics", "checkpoint_steps",
           "load_checkpoints", "cyclic_cosine", "snapshot_optimizer", "MemberHyperparameters",
           "member_optimizer", "set_hyperparameters"]


class EnsembleState(flax.struct.PyTreeNode):
    """N train states with every leaf stacked along a leading `[members]` axis (`members`), seen by
    `loop.fit` and `checkpoint` as one state: `step` (the members' common step), `params` (stacked),
    `savable()` (the stacked members' pytree, so `checkpoint.load_variables` gives params
    `[members, ...]`) and `restored()`."""

    members: TrainState

    @property
    def size(self) -> int:
        return int(jax.tree.leaves(self.members.params)[0].shape[0])

    @property
    def step(self) -> jax.Array:
        return self.members.step[0]

    @property
    def params(self):
        return self.members.params

    def savable(self) -> dict:
        return self.members.savable()

    def restored(self, savable: dict) -> "EnsembleState":
        return self.replace(members=self.members.restored(savable))


def stack_states(states: Sequence[TrainState]) -> EnsembleState:
    """The ensemble of `states` (one class, one `apply_fn` and `tx`; typically one seed each)."""
    first = states[0]
    same = [state.replace(apply_fn=first.apply_fn, tx=first.tx) for state in states]
    return EnsembleState(members=jax.tree.map(lambda *leaves: jnp.stack(leaves), *same))


def member(tree, index: int):
    """Member `index` of a stacked pytree (an `EnsembleState`'s members, stacked variables)."""
    return jax.tree.map(lambda leaf: leaf[index], tree)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def ensemble_step(member_step: Step, *, independent_orders: bool = False, keep_finite: bool = False) -> Step:
    """The per-device step of an `EnsembleState`: `member_step` on every member by `jax.vmap`.

    The batch is `[local_batch, ...]` read by every member, or with `independent_orders`
    `[local_batch, members, ...]` (member i reads `[:, i]`). Metrics: the mean over the members of
    each metric of `member_step`, and each member's as `<metric>_<i>`. With `keep_finite`, a member
    whose update gives a non-finite parameter keeps its previous parameters, statistics and
    optimizer state (its loss stays finite and the others train on; `frozen` counts them, `frozen_<i>`
    is 1 for a member frozen at this step).
    """

    def one_member(state: TrainState, batch):
        new_state, metrics = member_step(state, batch)
        if not keep_finite:
            return new_state, metrics
        finite = _all_finite(new_state.params)
        kept = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
        return kept.replace(step=new_state.step, rng=new_state.rng), {**metrics, "frozen": 1.0 - finite}

    vmapped = jax.vmap(one_member, in_axes=(0, 1 if independent_orders else None))

    def step(state: EnsembleState, batch) -> tuple[EnsembleState, dict]:
        members, metrics = vmapped(state.members, batch)
        size = jax.tree.leaves(metrics)[0].shape[0]
        combined = {name: jnp.sum(values) if name == "frozen" else jnp.mean(values)
                    for name, values in metrics.items()}
        combined |= {f"{name}_{index}": values[index] for name, values in metrics.items() for index in range(size)}
        return state.replace(members=members), combined

    return step


@dataclasses.dataclass(frozen=True)
class MemberBatches:
    """One batch order per member: `host_batch(step)` stacks batch `step` of each member's `Batches`
    (`{"image": uint8 [batch, members, h, w, c], "label": int32 [batch, members]}`)."""

    orders: Sequence[Batches]

    @property
    def steps_per_epoch(self) -> int:
        return self.orders[0].steps_per_epoch

    @property
    def source(self):
        return self.orders[0].source

    def host_batch(self, step: int) -> dict[str, np.ndarray]:
        batches = [order.host_batch(step) for order in self.orders]
        return {key: np.stack([batch[key] for batch in batches], axis=1) for key in batches[0]}


def member_batches(source, batch_size: int, seeds: Sequence[int], *, independent_orders: bool
                   ) -> Batches | MemberBatches:
    """The batches of an ensemble whose member i has seed `seeds[i]`: one order (that of `seeds[0]`)
    read by all, or member i reading the order of its own seed, as a lone run with that seed does."""
    if not independent_orders:
        return Batches(source, batch_size, seeds[0])
    return MemberBatches([Batches(source, batch_size, seed) for seed in seeds])


def member_logits(data_parallel: DataParallel, predict: Callable, variables, images: np.ndarray,
                  batch_size: int) -> np.ndarray:
    """The logits `[members, n, classes]` of each member on `images` `[n, ...]`: `predict(variables,
    images)` (e.g. `supervised.predict` with its `apply_fn`) vmapped over the stacked `variables`,
    in padded batches split over the devices."""

    def per_device(stacked, chunk):
        return jnp.moveaxis(jax.vmap(predict, in_axes=(0, None))(stacked, chunk), 0, 1)

    return np.moveaxis(map_over_batches(data_parallel, per_device, variables, images, batch_size), 1, 0)


def _log_mean_softmax(logits: jax.Array) -> jax.Array:
    """log p with p = (1/N) Σ_i softmax(s_i): logsumexp_i log softmax(s_i) − log N, `[n, classes]`."""
    log_probabilities = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return jax.scipy.special.logsumexp(log_probabilities, axis=0) - math.log(log_probabilities.shape[0])


def ensemble_probabilities(logits) -> jax.Array:
    """p(y|x) = (1/N) Σ_i softmax(s_i(x))_y: the members' class probabilities averaged, `[n, classes]`
    from logits `[members, n, classes]`."""
    return jnp.exp(_log_mean_softmax(logits))


def ensemble_metrics(logits, labels) -> dict[str, float]:
    """`{"accuracy", "nll"}` of the ensemble of logits `[members, n, classes]`: the fraction with
    argmax_y p(y|x) = label and −mean log p(label|x), p the mean of the members' softmax."""
    log_p = np.asarray(_log_mean_softmax(logits))
    labels = np.asarray(labels)
    return {"accuracy": float(np.mean(np.argmax(log_p, axis=-1) == labels)),
            "nll": float(-np.mean(log_p[np.arange(len(labels)), labels], dtype=np.float64))}


def member_metrics(logits, labels) -> dict[str, np.ndarray]:
    """`{"accuracy", "nll"}` `[members]` of each member alone (an ensemble of one)."""
    metrics = [ensemble_metrics(np.asarray(one)[None], labels) for one in logits]
    return {name: np.asarray([entry[name] for entry in metrics]) for name in ("accuracy", "nll")}


def checkpoint_steps(workdir: str | pathlib.Path) -> list[int]:
    """The steps of the finished checkpoints kept in `<workdir>/checkpoints`, oldest first."""
    directory = (pathlib.Path(workdir) / CHECKPOINT_DIR).absolute()
    if not directory.is_dir():
        raise UserError(f"{str(workdir)!r} holds no checkpoints ({directory} is missing); "
                        "pass the workdir of a run that has trained")
    with ocp.CheckpointManager(directory) as checkpoints:
        return sorted(checkpoints.all_steps())


def load_checkpoints(workdir: str | pathlib.Path, steps: Sequence[int] = ()) -> tuple[list[int], list[dict]]:
    """`(steps, [{"params", "batch_stats"}, ...])` of the checkpoints of `workdir` at `steps`
    (default: every checkpoint kept, `keep_checkpoints` of them), oldest first, read as saved: the
    snapshot ensemble of one run. A step with no checkpoint is a UserError listing those kept."""
    kept = checkpoint_steps(workdir)
    steps = sorted(set(int(step) for step in steps)) or kept
    missing = [step for step in steps if step not in kept]
    if missing:
        raise UserError(f"no checkpoint of step {', '.join(map(str, missing))} in {str(workdir)!r}; "
                        f"its checkpoints are at steps {', '.join(map(str, kept)) or 'none'}")
    with ocp.CheckpointManager((pathlib.Path(workdir) / CHECKPOINT_DIR).absolute()) as checkpoints:
        saved = [checkpoints.restore(step, args=ocp.args.StandardRestore()) for step in steps]
    return steps, [{"params": entry["params"], "batch_stats": entry.get("batch_stats", {})} for entry in saved]


def cyclic_cosine(cycle_steps: int) -> optax.Schedule:
    """The multiplier c_t = ½(1 + cos(π (t mod T)/T)), T = `cycle_steps`: cosine annealing from 1
    towards 0, restarted every T steps (the snapshot ensemble's schedule; a snapshot at each
    cycle's end)."""
    if cycle_steps < 1:
        raise UserError(f"a snapshot cycle of {cycle_steps} steps is empty; train for at least one step a cycle")

    def schedule(count):
        phase = jnp.mod(jnp.asarray(count, jnp.float32), cycle_steps) / cycle_steps
        return jnp.square(jnp.cos(0.5 * math.pi * phase))  # ½(1 + cos πx) = cos²(πx/2)

    return schedule


def snapshot_optimizer(config: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int,
                       cycles: int) -> optax.GradientTransformation:
    """The optimizer of `config` at its constant base learning rate, its updates scaled by
    `cyclic_cosine(total_steps // cycles)`: ε_t = ε c_t."""
    constant = ml_collections.ConfigDict(config.to_dict() | {"schedule": "constant"})
    tx = optimizer.create_optimizer(constant, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    return optax.chain(tx, optax.scale_by_schedule(cyclic_cosine(total_steps // cycles)))


class MemberHyperparameters(NamedTuple):
    """The learning rate ε and the weight decay λ of one member (scalars, stacked `[members]` in an
    ensemble) and the state of the optimizer they scale."""

    learning_rate: jax.Array
    weight_decay: jax.Array
    inner: optax.OptState


def member_optimizer(config: ml_collections.ConfigDict, *, total_steps: int, steps_per_epoch: int
                     ) -> optax.GradientTransformation:
    """The optimizer of `config` with ε and λ read from its state: u = ε · tx₁(g + λ m ⊙ θ), tx₁ the
    config's optimizer and schedule at base learning rate 1 without weight decay, m its weight-decay
    mask. Every update rule here is linear in ε, so this is the config's optimizer at (ε, λ) —
    different for each member of a vmapped group (`set_hyperparameters`). LARS, which applies λ
    inside its layer adaptation, is refused."""
    if config.optimizer == "lars":
        raise UserError("per-trial weight decay is added to the gradient, but LARS applies it inside its "
                        "update; tune another --config.optimizer (e.g. momentum)")
    unit = ml_collections.ConfigDict(config.to_dict() | {"weight_decay": 0.0})
    inner = optimizer.create_optimizer(unit, total_steps=total_steps, steps_per_epoch=steps_per_epoch,
                                       learning_rate=1.0)
    mask = registry.lookup(optimizer.DECAY_MASKS, config.weight_decay_mask, "weight_decay_mask")

    def init(params) -> MemberHyperparameters:
        return MemberHyperparameters(jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32), inner.init(params))

    def update(grads, state: MemberHyperparameters, params=None):
        decayed = jax.tree.map(lambda leaf: True, params) if mask is None else mask(params)
        grads = jax.tree.map(lambda g, p, m: g + state.weight_decay.astype(g.dtype) * p if m else g,
                             grads, params, decayed)
        updates, inner_state = inner.update(grads, state.inner, params)
        updates = jax.tree.map(lambda u: state.learning_rate.astype(u.dtype) * u, updates)
        return updates, state._replace(inner=inner_state)

    return optax.GradientTransformation(init, update)


def set_hyperparameters(state: TrainState, *, learning_rate: float, weight_decay: float) -> TrainState:
    """`state` (built with `member_optimizer`) training with learning rate ε and weight decay λ."""
    return state.replace(opt_state=state.opt_state._replace(
        learning_rate=jnp.asarray(learning_rate, jnp.float32), weight_decay=jnp.asarray(weight_decay, jnp.float32)))

