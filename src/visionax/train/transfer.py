"""Transfer learning (lecture 7): train a new classifier on the encoder of another run
(`config.init_from`: a supervised, SimCLR or MoCo workdir), with the lecture's cases on one key,
`config.finetune`:

- "linear": the fixed feature extractor: the pretrained network without its last layer, frozen, and
  a new linear classifier (the `head`) trained on its features;
- "top": the last `config.finetune_stages` stages and the head trained, the earlier stages frozen;
- "all": every layer trained;
- "" (the default): ordinary training (from `init_from` when given, its head included if it fits).

The head is freshly initialised in the three cases (the pretrained one answered another question).
Frozen parameters get no update (`optax.set_to_zero` in an `optax.multi_transform` over the parameter
paths), and frozen BatchNorm layers normalise with their running averages, which never move: the
frozen part is the pretrained network as it is evaluated. The pretrained layers that train take
`config.backbone_lr_multiplier` × the head's learning rate: their updates are the optimizer's,
weight decay included, times the multiplier, u_backbone = m · tx(g), which is the update at learning
rate m·ε for every optimizer whose update is linear in ε (SGD, momentum, Nesterov, AdaGrad, RMSProp,
Adam).

Stages are the blocks a family is built from, input to output: ResNets (and their descendants): the
stem (conv1, bn1), layer1, ..., layer4; the small CNN: each convolution with its BatchNorm.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from visionax.errors import UserError
from visionax.layers.norm import BatchNorm
from visionax.models import resnet, small_cnn
from visionax.parallel import Step
from visionax.train.pretrained import HEAD, load_pretrained
from visionax.train.state import TrainState, create_train_state

MODES = ("", "linear", "top", "all")
FROZEN, BACKBONE = "frozen", "backbone"  # the optimizer's groups besides HEAD


def _resnet_stage(name: str) -> int | None:
    """0 for the stem (conv1, bn1), k for the blocks layer<k>_<i>."""
    if name in ("conv1", "bn1"):
        return 0
    match = re.fullmatch(r"layer(\d+)_\d+", name)
    return int(match.group(1)) if match else None


def _small_cnn_stage(name: str) -> int | None:
    """i for the i-th convolution Conv_<i> and its BatchNorm_<i>."""
    match = re.fullmatch(r"(?:Conv|BatchNorm)_(\d+)", name)
    return int(match.group(1)) if match else None


# model name -> the stage of a top-level parameter name (None: not part of any stage)
STAGE_RULES: dict[str, Callable[[str], int | None]] = {
    **{name: _resnet_stage for name in resnet.CONFIGS}, **{name: _small_cnn_stage for name in small_cnn.CONFIGS}}

__all__ = ["MODES", "STAGE_RULES", "Transfer", "stages", "parameter_groups", "create_optimizer",
           "running_average_batch_norm", "keep_frozen_statistics", "create"]


@dataclasses.dataclass(frozen=True)
class Transfer:
    """The case (`mode`, one of MODES), the number of last stages fine-tuned by "top" (`stages`) and
    the pretrained layers' learning-rate multiplier."""

    mode: str = ""
    stages: int = 1
    backbone_lr_multiplier: float = 1.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"unknown finetune {self.mode!r}; choose one of linear, top, all, or '' for ordinary "
                            "training")
        if not self.backbone_lr_multiplier > 0:
            raise UserError(f"backbone_lr_multiplier={self.backbone_lr_multiplier} must be positive (a frozen "
                            "backbone is --config.finetune=linear); pass e.g. --config.backbone_lr_multiplier=0.1")
        if self.mode == "" and self.backbone_lr_multiplier != 1.0:
            raise UserError(f"backbone_lr_multiplier={self.backbone_lr_multiplier} applies only when fine-tuning; "
                            "pass --config.finetune=all (or top), or leave it at 1")
        if self.mode == "top" and (isinstance(self.stages, bool) or not isinstance(self.stages, int)
                                   or self.stages < 1):
            raise UserError(f"finetune_stages={self.stages!r} must be a positive integer (the last stages "
                            "fine-tuned); pass e.g. --config.finetune_stages=1")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Transfer":
        """From `finetune`, `finetune_stages` and `backbone_lr_multiplier`; fine-tuning needs
        `init_from`, and "top" a `model` whose stages are defined."""
        transfer = cls(config.finetune, config.finetune_stages, config.backbone_lr_multiplier)
        if transfer.mode and not config.init_from:
            raise UserError(f"finetune={transfer.mode} starts from a pretrained run; pass "
                            "--config.init_from=<workdir of a supervised or self-supervised run>")
        if transfer.mode == "top":
            _stage_rule(config.model)
        return transfer


def _stage_rule(model_name: str) -> Callable[[str], int | None]:
    if model_name not in STAGE_RULES:
        raise UserError(f"finetune=top needs the stages of the model, defined for {', '.join(STAGE_RULES)}, not "
                        f"{model_name!r}; pass one of those as --config.model, or use --config.finetune=linear or all")
    return STAGE_RULES[model_name]


def stages(model_name: str, params: dict) -> list[list[str]]:
    """The top-level parameter names of each stage of `model_name` (sorted), input to output (the head excluded)."""
    rule = _stage_rule(model_name)
    by_stage: dict[int, list[str]] = {}
    for name in params:
        if name != HEAD:
            stage = rule(name)
            if stage is None:
                raise ValueError(f"parameter {name!r} of {model_name} is in no stage")
            by_stage.setdefault(stage, []).append(name)
    return [sorted(by_stage[stage]) for stage in sorted(by_stage)]


def parameter_groups(model_name: str, params: dict, transfer: Transfer) -> dict[str, str]:
    """{top-level parameter name: HEAD, BACKBONE (pretrained, trained) or FROZEN} for `transfer`."""
    trained: set[str] = set()
    if transfer.mode == "all":
        trained = set(params)
    elif transfer.mode == "top":
        model_stages = stages(model_name, params)
        if transfer.stages > len(model_stages):
            raise UserError(f"finetune_stages={transfer.stages} exceeds the {len(model_stages)} stages of "
                            f"{model_name}; pass --config.finetune_stages=1..{len(model_stages)} (or finetune=all)")
        trained = {name for stage in model_stages[len(model_stages) - transfer.stages:] for name in stage}
    return {name: HEAD if name == HEAD else BACKBONE if name in trained else FROZEN for name in params}


def create_optimizer(tx: optax.GradientTransformation, groups: dict[str, str], backbone_lr_multiplier: float
                     ) -> optax.GradientTransformation:
    """`tx` for the head, `tx` with its updates × `backbone_lr_multiplier` for the trained pretrained
    layers, zero updates for the frozen ones; each group keeps its own optimizer state."""
    transforms = {HEAD: tx, BACKBONE: optax.chain(tx, optax.scale(backbone_lr_multiplier)),
                  FROZEN: optax.set_to_zero()}

    def labels(params):
        return {name: jax.tree.map(lambda _, group=groups[name]: group, subtree) for name, subtree in params.items()}

    return optax.multi_transform(transforms, labels)


def running_average_batch_norm(apply_fn: Callable, frozen: frozenset[str]) -> Callable:
    """`apply_fn` in which every BatchNorm under the top-level names `frozen` normalises with its
    running averages, also in training (and so leaves them as they are)."""

    def interceptor(next_method, args, kwargs, context):
        module = context.module
        if (context.method_name == "__call__" and isinstance(module, BatchNorm) and not module.use_running_average
                and module.path and module.path[0] in frozen):
            evaluated = module.clone(parent=None, use_running_average=True)
            return evaluated.apply(module.variables, *args, **kwargs)
        return next_method(*args, **kwargs)

    @functools.wraps(apply_fn)
    def apply(*args, **kwargs):
        with nn.intercept_methods(interceptor):
            return apply_fn(*args, **kwargs)

    return apply


def keep_frozen_statistics(per_device_step: Step, frozen: frozenset[str]) -> Step:
    """`per_device_step` with the BatchNorm statistics under the top-level names `frozen` restored
    after the update: averaging equal values over devices (`lax.pmean`) may round them."""

    def step(state: TrainState, batch):
        new_state, metrics = per_device_step(state, batch)
        kept = {name: state.batch_stats[name] if name in frozen else stats
                for name, stats in new_state.batch_stats.items()}
        return new_state.replace(batch_stats=kept), metrics

    return step


def create(config: ml_collections.ConfigDict, model, tx: optax.GradientTransformation,
           image_shape: tuple[int, ...], per_device_step: Step) -> tuple[TrainState, Step]:
    """The step-0 state and the per-device step of `config.finetune` for `model` (`config.model`) and
    the optimizer `tx` (the head's): ordinary training (`create_train_state` from `init_from`) for "";
    otherwise the encoder of `config.init_from` with a fresh head, the frozen groups and the multiplier."""
    transfer = Transfer.from_config(config)
    rng = jax.random.PRNGKey(config.seed)
    if not transfer.mode:
        return create_train_state(rng, model, tx, image_shape, init_from=config.init_from), per_device_step
    fresh = create_train_state(rng, model, tx, image_shape)
    groups = parameter_groups(config.model, fresh.params, transfer)
    loaded = load_pretrained(fresh.variables, config.init_from)
    params = {**loaded["params"], HEAD: fresh.params[HEAD]}
    frozen = frozenset(name for name, group in groups.items() if group == FROZEN)
    transfer_tx = create_optimizer(tx, groups, transfer.backbone_lr_multiplier)
    state = fresh.replace(params=params, batch_stats=loaded.get("batch_stats", {}), opt_state=transfer_tx.init(params),
                          tx=transfer_tx, apply_fn=running_average_batch_norm(model.apply, frozen))
    if jax.process_index() == 0:
        counts = {group: sum(leaf.size for name in params if groups[name] == group
                             for leaf in jax.tree.leaves(params[name])) for group in (HEAD, BACKBONE, FROZEN)}
        print(f"finetune={transfer.mode}: head freshly initialised ({counts[HEAD]:,} parameters), "
              f"{counts[BACKBONE]:,} pretrained parameters trained at {transfer.backbone_lr_multiplier:g} × the "
              f"learning rate, {counts[FROZEN]:,} frozen ({', '.join(sorted(frozen)) or 'none'})")
    return state, keep_frozen_statistics(per_device_step, frozen)
