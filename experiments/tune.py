"""Lecture 8's hyperparameter recipe as a tool: `python -m experiments.tune --config=<supervised config>`.

On the config's model and data, with `config.validation_fraction` of the training split held out
(set from `config.tune` when the config holds out nothing):

1. the initial loss with the regularisation off against ln C (the SVM: (C − 1)Δ), a mismatch flagged
   with its likely cause;
2. the first few minibatches overfitted with the regularisation off (flagged unless the training
   accuracy on them reaches 100%);
3. the learning rates 1e-1 … 1e-4 for about 100 iterations with a small weight decay: the one whose
   training loss falls furthest;
4. a coarse search around it for a few epochs: log-uniform random learning rates, each with a weight
   decay from {1e-4, 1e-5, 0}, beside the grid of as many trials, which tries only a few distinct
   learning rates (the axis that matters);
5. the best few trained longer at a constant learning rate;
6. every curve read by explicit rules (`CurveRules`): still falling → train longer; a large
   train/validation gap → overfitting; no large gap but a low training accuracy → underfitting.

Each stage's trials train together as the members of one vmapped program (`visionax.ensemble`,
learning rate and weight decay per member in the optimizer state), in an ordinary workdir
`<workdir>/<stage>` that resumes after kill -9; a finished stage is read back, not trained again. A
dense sweep of learning rates, repeated over `dense_sweep_seeds` initialisations and batch orders,
checks where the recipe ended (its best: the lowest validation loss averaged over the seeds). Writes `tune_report.md` with its
PNGs and `results.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments.configs import tune as tune_config
from visionax import cli, ensemble, models, report
from visionax.data.pipeline import ArraySource, Batches
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.parallel import DATA_AXIS
from visionax.train import checkpoint, loop, setup, supervised
from visionax.train.metrics import read_metrics
from visionax.train.state import create_train_state

NAME = "tune"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
TRIALS_FILE = "trials.json"
REPORT_FILE = "tune_report.md"
SUPERVISED_KEYS = ("model", "model_options", "dtype", "conv_impl", "optimizer", "learning_rate", "schedule",
                   "weight_decay", "weight_decay_mask", "loss", "svm_margin", "l2_penalty", "augment", "batch_size")
REGULARISING_OPTIONS = ("dropout", "stochastic_depth")  # model options set to 0 with the regularisation off
SPLITS = ("train", "validation")
ADVICE = {
    "diverged": "the loss did not fall (or blew up): lower the learning rate",
    "still falling": "training and validation losses still falling: train longer",
    "overfitting": "large train/validation gap: more regularisation or more data",
    "underfitting": "no large train/validation gap, but a low training accuracy: a bigger model, train longer",
    "fits": "no large gap at a high training accuracy: keep",
}


@dataclasses.dataclass(frozen=True)
class Search:
    """The recipe's settings (`config.tune`, keys described in experiments/configs/tune.py)."""

    validation_fraction: float
    initial_loss_tolerance: float
    overfit_batches: int
    overfit_steps: int
    lr_candidates: tuple[float, ...]
    lr_iterations: int
    lr_weight_decay: float
    search_decades: float
    weight_decays: tuple[float, ...]
    random_trials: int
    grid_learning_rates: int
    coarse_epochs: int
    rank_by: str
    longer_trials: int
    longer_epochs: int
    falling: float
    overfit_gap: float
    fit_accuracy: float
    eval_points: int
    eval_examples: int
    dense_sweep: int
    dense_sweep_seeds: int

    @classmethod
    def from_config(cls, block: ml_collections.ConfigDict) -> "Search":
        values = block.to_dict()
        unknown = sorted(set(values) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise UserError(f"unknown key tune.{unknown[0]}; see the keys with --help")
        values = tune_config.search().to_dict() | values
        values["lr_candidates"] = _numbers(values["lr_candidates"], "lr_candidates", positive=True)
        values["weight_decays"] = _numbers(values["weight_decays"], "weight_decays", positive=False)
        search = cls(**values)
        search.check()
        return search

    def check(self) -> None:
        counts = ("overfit_batches", "overfit_steps", "lr_iterations", "random_trials", "grid_learning_rates",
                  "coarse_epochs", "longer_trials", "longer_epochs", "eval_points", "eval_examples",
                  "dense_sweep_seeds")
        for key in counts:
            if getattr(self, key) < 1:
                raise UserError(f"tune.{key}={getattr(self, key)} must be >= 1; set --config.tune.{key} to a "
                                "positive integer")
        if self.dense_sweep < 0 or self.dense_sweep == 1:
            raise UserError(f"tune.dense_sweep={self.dense_sweep} must be 0 (none) or at least 2 learning rates")
        for key in ("validation_fraction", "fit_accuracy"):
            if not 0 < getattr(self, key) < 1:
                raise UserError(f"tune.{key}={getattr(self, key)} must be in (0, 1); pass e.g. --config.tune.{key}=0.1")
        for key in ("initial_loss_tolerance", "search_decades", "falling", "overfit_gap"):
            if not getattr(self, key) > 0:
                raise UserError(f"tune.{key}={getattr(self, key)} must be positive")
        if self.lr_weight_decay < 0:
            raise UserError(f"tune.lr_weight_decay={self.lr_weight_decay} must be >= 0")
        if self.rank_by not in ("loss", "accuracy"):
            raise UserError(f"unknown tune.rank_by {self.rank_by!r}; choose one of loss, accuracy")

    @property
    def rules(self) -> "CurveRules":
        return CurveRules(self.falling, self.overfit_gap, self.fit_accuracy)


def _numbers(text, key: str, *, positive: bool) -> tuple[float, ...]:
    """The comma-separated numbers of `text` (all > 0 when `positive`, else >= 0)."""
    try:
        values = tuple(float(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        values = ()
    bound_ok = all(value > 0 if positive else value >= 0 for value in values)
    if not values or not bound_ok or not all(map(math.isfinite, values)):
        raise UserError(f"tune.{key}={text!r} must be comma-separated numbers {'> 0' if positive else '>= 0'}; "
                        f"pass e.g. --config.tune.{key}={tune_config.search()[key]}")
    return values


@dataclasses.dataclass(frozen=True)
class CurveRules:
    """The lecture's reading of a trial's curves, as explicit thresholds (see `read`)."""

    falling: float = 0.02
    overfit_gap: float = 0.05
    fit_accuracy: float = 0.99

    def still_falling(self, losses) -> bool:
        """The loss fell by more than `falling` (relative) over the last quarter of the evaluations:
        L[k] − L[−1] > falling · L[k], k = ⌊3(n − 1)/4⌋."""
        losses = np.asarray(losses, np.float64)
        start = losses[(3 * (len(losses) - 1)) // 4]
        return len(losses) > 1 and bool(start - losses[-1] > self.falling * start)

    def read(self, curve: dict) -> str:
        """A key of `ADVICE`, the first rule that holds: "diverged" (a non-finite value, a frozen
        member, or a final training loss not below the first), "still falling" (the training and
        the validation loss both `still_falling`), "overfitting" (final training minus validation
        accuracy > `overfit_gap`), "underfitting" (a final training accuracy < `fit_accuracy`),
        else "fits"."""
        values = [curve[f"{split}_{metric}"] for split in SPLITS for metric in ("loss", "accuracy")]
        train_loss = curve["train_loss"]
        if curve.get("frozen") or not np.all(np.isfinite(values)) or train_loss[-1] >= train_loss[0]:
            return "diverged"
        if self.still_falling(train_loss) and self.still_falling(curve["validation_loss"]):
            return "still falling"
        gap = curve["train_accuracy"][-1] - curve["validation_accuracy"][-1]
        if gap > self.overfit_gap:
            return "overfitting"
        if curve["train_accuracy"][-1] < self.fit_accuracy:
            return "underfitting"
        return "fits"


def expected_initial_loss(settings: supervised.SupervisedSettings) -> float:
    """The data loss of a network whose class scores start near equal: ln C for softmax
    cross-entropy, (C − 1)Δ for the multiclass SVM."""
    if settings.loss == "svm":
        return (settings.num_classes - 1) * settings.svm_margin
    return math.log(settings.num_classes)


def initial_loss(model, variables: dict, batch: dict, settings: supervised.SupervisedSettings, rng: jax.Array
                 ) -> float:
    """The data loss of `variables` on a uint8 `batch` as the first training step sees it (train mode:
    BatchNorm on the batch's statistics), without any penalty."""
    logits, _ = model.apply(variables, model_input(jnp.asarray(batch["image"])), train=True,
                            mutable=["batch_stats"], rngs={"dropout": rng})
    return float(supervised.data_loss(logits, jnp.asarray(batch["label"]), settings))


def initial_loss_finding(loss: float, expected: float, tolerance: float) -> str:
    """"" when |loss − expected| <= tolerance · expected, else the mismatch and its likely cause."""
    if abs(loss - expected) <= tolerance * expected:
        return ""
    if loss > expected:
        return (f"initial loss {loss:.4g} is far above {expected:.4g}: the class scores start far from equal, likely "
                "the last layer's initial weights (or the input scale) are too large")
    return (f"initial loss {loss:.4g} is far below {expected:.4g}: better than chance before training, likely "
            "the labels leak into the inputs or the loss is not the mean over the examples")


def log_uniform(rng: np.random.Generator, low: float, high: float, count: int) -> np.ndarray:
    """`count` draws with log x ~ U(log low, log high): every decade equally likely."""
    return np.exp(rng.uniform(math.log(low), math.log(high), count))


def random_trials(rng: np.random.Generator, center: float, search: Search) -> list[tuple[float, float]]:
    """`random_trials` (learning rate, weight decay): the rate log-uniform within ± `search_decades`
    of `center`, the decay drawn uniformly from `weight_decays`."""
    spread = 10.0 ** search.search_decades
    rates = log_uniform(rng, center / spread, center * spread, search.random_trials)
    decays = rng.choice(np.asarray(search.weight_decays), search.random_trials)
    return [(float(rate), float(decay)) for rate, decay in zip(rates, decays)]


def grid_trials(center: float, search: Search) -> list[tuple[float, float]]:
    """The grid: `grid_learning_rates` rates log-spaced over ± `search_decades` × every weight decay."""
    rates = center * np.logspace(-search.search_decades, search.search_decades, search.grid_learning_rates) \
        if search.grid_learning_rates > 1 else np.asarray([center])
    return [(float(rate), float(decay)) for rate in rates for decay in search.weight_decays]


def without_regularisation(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with weight decay, the L2 penalty, every augmentation and the model's dropout and
    stochastic depth off."""
    options = {name: 0.0 for name in models.model_options(config.model)
               if any(word in name for word in REGULARISING_OPTIONS)}
    return _changed(config, weight_decay=0.0, l2_penalty=0.0, augment={key: 0 for key in config.augment},
                    model_options=config.model_options.to_dict() | options)


def _changed(config: ml_collections.ConfigDict, **changes) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(config.to_dict() | changes)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One vmapped group of trials `(learning rate, weight decay)` trained `num_steps` steps on
    `batches` under `schedule`, evaluated on `evaluation` ({split: arrays}) in `<workdir>/<name>`,
    from the initialisation of `seed` (None: the config's)."""

    name: str
    trials: tuple[tuple[float, float], ...]
    num_steps: int
    schedule: str
    batches: Batches
    evaluation: dict
    regularised: bool = True
    seed: int | None = None


@dataclasses.dataclass(frozen=True)
class Tuning:
    """What every stage shares: the tuning config, its data, the recipe's settings and the workdir."""

    config: ml_collections.ConfigDict
    run: setup.Setup
    search: Search
    root: pathlib.Path

    def stage_config(self, stage: Stage) -> ml_collections.ConfigDict:
        base = self.config if stage.regularised else without_regularisation(self.config)
        every = max(1, stage.num_steps // self.search.eval_points)
        return _changed(base, seed=base.seed if stage.seed is None else stage.seed, stage=stage.name, trials=[list(trial) for trial in stage.trials],
                        schedule=stage.schedule, num_steps=stage.num_steps, eval_every=every, log_every=every,
                        checkpoint_every=max(1, min(self.config.checkpoint_every, stage.num_steps)))


def train_stage(tuning: Tuning, stage: Stage) -> tuple[list[dict], bool]:
    """The trials of `stage` (one dict each: hyperparameters and curves), trained together unless
    `<workdir>/<stage>/trials.json` says they finished; and whether this call trained them."""
    workdir = tuning.root / stage.name
    config = tuning.stage_config(stage)
    finished = workdir / TRIALS_FILE
    if finished.exists():
        checkpoint.claim_workdir(workdir, config, write=False)  # another config: one line, nothing touched
        return json.loads(finished.read_text())["trials"], False
    run = tuning.run
    settings = supervised.SupervisedSettings.from_config(config, run.num_classes)
    model = setup.model_from_config(config, run.num_classes, bn_axis_name=DATA_AXIS)
    tx = ensemble.member_optimizer(config, total_steps=stage.num_steps, steps_per_epoch=stage.batches.steps_per_epoch)
    start = create_train_state(jax.random.PRNGKey(config.seed), model, tx, run.image_shape, init_from=config.init_from)
    state = ensemble.stack_states([ensemble.set_hyperparameters(start, learning_rate=rate, weight_decay=decay)
                                   for rate, decay in stage.trials])
    step = ensemble.ensemble_step(functools.partial(supervised.train_step, settings=settings), keep_finite=True)
    predict = functools.partial(supervised.predict, apply_fn=model.apply)

    def evaluate(state: ensemble.EnsembleState, step_number: int) -> dict[str, float]:
        del step_number
        members = state.members
        values = {}
        for split, arrays in stage.evaluation.items():
            logits = ensemble.member_logits(run.data_parallel, predict, members.variables, arrays.images,
                                            config.batch_size)
            metrics = ensemble.member_metrics(logits, arrays.labels)
            for index in range(len(stage.trials)):
                values[f"{split}_loss_{index}"] = metrics["nll"][index]
                values[f"{split}_accuracy_{index}"] = metrics["accuracy"][index]
        return values

    loop.fit(config, workdir, state=state, per_device_step=step, batches=stage.batches,
             data_parallel=run.data_parallel, num_steps=stage.num_steps, evaluate=evaluate)
    trials = curves(workdir, stage)
    finished.write_text(json.dumps({"trials": trials}, indent=1) + "\n")
    return trials, True


def curves(workdir: pathlib.Path, stage: Stage) -> list[dict]:
    """Each trial's hyperparameters and curves from `<workdir>/metrics.jsonl`: the evaluations
    (`steps`, `<split>_loss`, `<split>_accuracy`), the logged training-batch loss (`batch_steps`,
    `batch_loss`) and whether a non-finite update froze it."""
    records = read_metrics(workdir)
    evaluations = [record for record in records if record["split"] == "eval"]
    logged = [record for record in records if record["split"] == "train"]
    trials = []
    for index, (rate, decay) in enumerate(stage.trials):
        trial = {"stage": stage.name, "seed": stage.seed, "learning_rate": rate, "weight_decay": decay, "num_steps": stage.num_steps,
                 "steps": [record["step"] for record in evaluations],
                 "batch_steps": [record["step"] for record in logged],
                 "batch_loss": [record[f"loss_{index}"] for record in logged],
                 "frozen": any(record[f"frozen_{index}"] > 0 for record in logged)}
        for split in stage.evaluation:
            for metric in ("loss", "accuracy"):
                trial[f"{split}_{metric}"] = [record[f"{split}_{metric}_{index}"] for record in evaluations]
        trials.append(trial)
    return trials


def final(trial: dict, key: str) -> float:
    return trial[key][-1]


def ranked(trials: list[dict], rank_by: str) -> list[dict]:
    """`trials`, best first: by final validation loss, or validation accuracy (ties: the loss);
    diverged or frozen trials last."""
    def key(trial):
        loss = final(trial, "validation_loss")
        broken = trial["frozen"] or not math.isfinite(loss)
        return (broken, -final(trial, "validation_accuracy") if rank_by == "accuracy" else 0.0,
                loss if math.isfinite(loss) else math.inf)
    return sorted(trials, key=key)


def seed_means(trials: list[dict]) -> list[dict]:
    """One trial per learning rate of a sweep repeated over seeds: the final validation loss and
    accuracy averaged over the seeds, frozen when any seed froze (the sweep's best is the best mean,
    not one seed's lucky last evaluation)."""
    by_rate: dict[float, list[dict]] = {}
    for trial in trials:
        by_rate.setdefault(trial["learning_rate"], []).append(trial)
    return [{"learning_rate": rate, "weight_decay": repeats[0]["weight_decay"], "seeds": len(repeats),
             "frozen": any(trial["frozen"] for trial in repeats),
             **{key: [float(np.mean([final(trial, key) for trial in repeats]))]
                for key in ("validation_loss", "validation_accuracy")}}
            for rate, repeats in by_rate.items()]


def fastest_falling(trials: list[dict]) -> dict:
    """The trial of step 3 with the lowest final training loss, i.e. the one whose loss fell
    furthest from the common start (frozen or non-finite ones excluded)."""
    healthy = [trial for trial in trials if not trial["frozen"] and math.isfinite(final(trial, "train_loss"))]
    if not healthy:
        raise UserError("every learning rate of tune.lr_candidates diverged; pass smaller ones, e.g. "
                        "--config.tune.lr_candidates=0.01,0.001,0.0001,0.00001")
    return min(healthy, key=lambda trial: final(trial, "train_loss"))


def check_config(config: ml_collections.ConfigDict) -> Search:
    """The recipe's settings; a UserError for a config that is not supervised or a bad setting."""
    missing = [key for key in SUPERVISED_KEYS if key not in config]
    if missing:
        raise UserError(f"the config has no key {missing[0]!r}: it is not a supervised config; pass e.g. "
                        "--config=experiments/configs/classify.py")
    return Search.from_config(config.tune if "tune" in config else tune_config.search())


def tuning_config(config: ml_collections.ConfigDict, search: Search) -> ml_collections.ConfigDict:
    """`config` holding out `search.validation_fraction` for validation when it holds out nothing."""
    if config.get("validation_fraction", 0.0):
        return config
    return _changed(config, validation_fraction=search.validation_fraction)


def _first(arrays: ArraySource, count: int) -> ArraySource:
    return ArraySource(arrays.images[:count], arrays.labels[:count])


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    search = check_config(config)
    tuned = tuning_config(config, search)
    run = setup.setup(tuned)
    root = pathlib.Path(workdir)
    settings = supervised.SupervisedSettings.from_config(tuned, run.num_classes)
    batch_size, steps_per_epoch = tuned.batch_size, run.batches.steps_per_epoch
    overfit_size = search.overfit_batches * batch_size
    if overfit_size > len(run.train.labels):
        raise UserError(f"tune.overfit_batches={search.overfit_batches} batches of {batch_size} exceed the "
                        f"{len(run.train.labels)} training examples; pass fewer --config.tune.overfit_batches")
    ensemble.member_optimizer(tuned, total_steps=1, steps_per_epoch=1)  # a bad optimizer stops here
    validation = {"train": _first(run.train, search.eval_examples), "validation": run.validation}
    tuning = Tuning(tuned, run, search, root)
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    trained = []

    def stage(name, trials, num_steps, schedule, **options):
        options = {"batches": run.batches, "evaluation": validation} | options
        trials, did_train = train_stage(tuning, Stage(name, tuple(trials), num_steps, schedule, **options))
        if did_train:
            trained.append(name)
        return trials

    # 1. The initial loss, regularisation off.
    plain = without_regularisation(tuned)
    model = setup.model_from_config(plain, run.num_classes)
    variables = create_train_state(jax.random.PRNGKey(tuned.seed), model, optax.identity(), run.image_shape,
                                   init_from=tuned.init_from).variables
    loss_zero = initial_loss(model, variables, run.batches.host_batch(0), settings, jax.random.PRNGKey(tuned.seed))
    expected = expected_initial_loss(settings)
    initial_finding = initial_loss_finding(loss_zero, expected, search.initial_loss_tolerance)
    # 2. Overfit a few minibatches, regularisation off, at the config's learning rate.
    few = _first(run.train, overfit_size)
    overfit = stage("overfit", [(tuned.learning_rate, 0.0)], search.overfit_steps, "constant",
                    batches=Batches(few, batch_size, tuned.seed), evaluation={"train": few}, regularised=False)[0]
    overfit_accuracy = final(overfit, "train_accuracy")
    overfit_finding = "" if overfit_accuracy == 1.0 else (
        f"training accuracy {overfit_accuracy:.4g} < 100% on {overfit_size} examples after {search.overfit_steps} "
        "steps: the model, the loss or the learning rate is broken (or too small a model); fix this first")
    # 3. Coarse learning rates, ~100 iterations, a small weight decay.
    rates = stage("learning_rates", [(rate, search.lr_weight_decay) for rate in search.lr_candidates],
                  search.lr_iterations, "constant")
    center = fastest_falling(rates)["learning_rate"]
    # 4. Random and grid search around it, a few epochs each, under the config's schedule.
    coarse_steps = search.coarse_epochs * steps_per_epoch
    random_search = stage("random_search", random_trials(np.random.default_rng(tuned.seed), center, search),
                          coarse_steps, tuned.schedule)
    grid_search = stage("grid_search", grid_trials(center, search), coarse_steps, tuned.schedule)
    # 5. The best few trained longer at a constant learning rate.
    best = []
    for trial in ranked(random_search + grid_search, search.rank_by):
        pair = (trial["learning_rate"], trial["weight_decay"])
        if pair not in best and len(best) < search.longer_trials:
            best.append(pair)
    longer_steps = search.longer_epochs * steps_per_epoch
    longer = stage("longer", best, longer_steps, "constant")
    chosen = ranked(longer, search.rank_by)[0]
    dense = []
    if search.dense_sweep:  # each seed: another initialisation and batch order, the same rates
        sweep = [(float(rate), chosen["weight_decay"])
                 for rate in np.geomspace(min(search.lr_candidates), max(search.lr_candidates), search.dense_sweep)]
        for offset in range(search.dense_sweep_seeds):
            seed = tuned.seed + offset
            dense += stage("dense_sweep" if offset == 0 else f"dense_sweep_seed{seed}", sweep, longer_steps,
                           "constant", batches=dataclasses.replace(run.batches, seed=seed), seed=seed)
    # 6. The curves read by the rules.
    rules = search.rules
    stages = {"learning rates (step 3)": rates, "random search (step 4)": random_search,
              "grid search (step 4)": grid_search, "longer (step 5)": longer, "dense sweep (check)": dense}
    for trials in stages.values():
        for trial in trials:
            trial["verdict"] = rules.read(trial)
    summary = {"initial_loss": loss_zero, "expected_initial_loss": expected, "initial_loss_finding": initial_finding,
               "overfit_accuracy": overfit_accuracy, "overfit_finding": overfit_finding,
               "step3_learning_rate": center, "learning_rate": chosen["learning_rate"],
               "weight_decay": chosen["weight_decay"], "validation_examples": len(run.validation.labels),
               "trained": trained}
    if dense:
        sweep_means = seed_means(dense)
        best_dense = ranked(sweep_means, search.rank_by)[0]["learning_rate"]
        summary |= {"dense_sweep_learning_rate": best_dense, "ratio_to_dense_sweep": chosen["learning_rate"] / best_dense,
                    "dense_sweep_seeds": search.dense_sweep_seeds,
                    "dense_sweep_mean_validation_loss": [final(trial, "validation_loss") for trial in sweep_means],
                    "dense_sweep_best_per_seed": [ranked([trial for trial in dense if trial["seed"] == seed],
                                                         search.rank_by)[0]["learning_rate"]
                                                  for seed in dict.fromkeys(trial["seed"] for trial in dense)]}
    rows = [[name if trial.get("seed") is None else f"{name}, seed {trial['seed']}", trial["learning_rate"], trial["weight_decay"], trial["num_steps"], final(trial, "train_loss"),
             final(trial, "train_accuracy"), final(trial, "validation_loss"), final(trial, "validation_accuracy"),
             trial["verdict"]] for name, trials in stages.items() for trial in trials]
    table = report.Table(
        f"tuning {tuned.model} on {run.spec.name} ({tuned.optimizer}, batch {batch_size}): chosen learning rate "
        f"{chosen['learning_rate']:.3g}, weight decay {chosen['weight_decay']:g}",
        ["stage", "learning rate", "weight decay", "steps", "train loss", "train accuracy", "validation loss",
         "validation accuracy", "verdict"], rows)
    plots = [plot_learning_rates(rates, root / "learning_rates.png"),
             plot_search(random_search, grid_search, root / "search.png"),
             plot_curves(longer, root / "curves.png")]
    if dense:
        plots.append(plot_dense_sweep(dense, sweep_means, chosen, root / "dense_sweep.png"))
    write_report(root / REPORT_FILE, tuned, search, summary, stages, overfit, plots)
    return report.finish(workdir, table, plots=plots, summary=summary)


def plot_learning_rates(trials: list[dict], path: pathlib.Path) -> pathlib.Path:
    """Step 3: the training-batch loss of each learning rate against the step."""
    fig, axes = report.figure(panel_size=(5.5, 4.0))
    axis = axes[0, 0]
    for trial in trials:
        axis.plot(trial["batch_steps"], trial["batch_loss"], label=f"learning rate {trial['learning_rate']:g}")
    axis.set_yscale("log")
    axis.set_xlabel("step")
    axis.set_ylabel("training loss (logged batches)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return report.save(fig, path, title="Step 3: which learning rate makes the loss fall")


def plot_search(random_search: list[dict], grid_search: list[dict], path: pathlib.Path) -> pathlib.Path:
    """Step 4: the trials in the (learning rate, weight decay) plane (left) and their validation loss
    against the learning rate (right): the grid tries few distinct learning rates."""
    fig, axes = report.figure(1, 2, panel_size=(5.0, 4.0))
    left, right = axes[0]
    for trials, marker, label in ((random_search, "o", "random"), (grid_search, "s", "grid")):
        rates = [trial["learning_rate"] for trial in trials]
        losses = [final(trial, "validation_loss") for trial in trials]
        left.scatter(rates, [trial["weight_decay"] for trial in trials], marker=marker, label=label,
                     facecolors="none" if marker == "s" else None, edgecolors="C1" if marker == "s" else None)
        right.scatter(rates, losses, marker=marker, label=label)
    left.set_xscale("log")
    left.set_yscale("symlog", linthresh=1e-6)
    left.set_xlabel("learning rate")
    left.set_ylabel("weight decay")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("learning rate")
    right.set_ylabel("final validation loss")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    return report.save(fig, path, title="Step 4: random search covers the learning rate axis better")


def plot_curves(trials: list[dict], path: pathlib.Path) -> pathlib.Path:
    """Step 5/6: training (solid) and validation (dashed) loss and accuracy of each longer trial."""
    fig, axes = report.figure(1, 2, panel_size=(5.0, 4.0))
    for index, trial in enumerate(trials):
        label = f"lr {trial['learning_rate']:.3g}, wd {trial['weight_decay']:g}: {trial['verdict']}"
        for axis, metric in zip(axes[0], ("loss", "accuracy")):
            axis.plot(trial["steps"], trial[f"train_{metric}"], "-", color=f"C{index}", label=label)
            axis.plot(trial["steps"], trial[f"validation_{metric}"], "--", color=f"C{index}")
    for axis, metric in zip(axes[0], ("loss", "accuracy")):
        axis.set_xlabel("step")
        axis.set_ylabel(f"{metric} (solid: training, dashed: validation)")
        axis.grid(alpha=0.3)
    axes[0, 0].set_yscale("log")
    axes[0, 0].legend(fontsize=7)
    return report.save(fig, path, title="Step 5: the best trials trained longer, constant learning rate")


def plot_dense_sweep(trials: list[dict], means: list[dict], chosen: dict, path: pathlib.Path) -> pathlib.Path:
    """The dense sweep's final validation loss against the learning rate, one thin line per seed and
    their mean, the recipe's choice marked."""
    fig, axes = report.figure(panel_size=(5.5, 4.0))
    axis = axes[0, 0]
    for seed in dict.fromkeys(trial["seed"] for trial in trials):
        repeat = [trial for trial in trials if trial["seed"] == seed]
        axis.plot([trial["learning_rate"] for trial in repeat], [final(trial, "validation_loss") for trial in repeat],
                  "-", color="C0", alpha=0.35, linewidth=1, label=f"seed {seed}")
    axis.plot([trial["learning_rate"] for trial in means], [final(trial, "validation_loss") for trial in means], "-o",
              color="C0", label=f"mean over {means[0]['seeds']} seeds")
    axis.axvline(chosen["learning_rate"], color="C1", linestyle="--", label="the recipe's learning rate")
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("final validation loss")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    return report.save(fig, path, title="Check: a dense learning-rate sweep")


def _trial_table(trials: list[dict]) -> list[str]:
    seeded = any(trial.get("seed") is not None for trial in trials)
    lines = [("| seed " if seeded else "") + "| learning rate | weight decay | steps | train loss | train acc. | val. loss | "
             "val. acc. | verdict |", "|---" * (9 if seeded else 8) + "|"]
    for trial in trials:
        lines.append((f"| {trial['seed']} " if seeded else "") +
                     f"| {trial['learning_rate']:.3g} | {trial['weight_decay']:g} | {trial['num_steps']} | "
                     f"{final(trial, 'train_loss'):.4g} | {final(trial, 'train_accuracy'):.4g} | "
                     f"{final(trial, 'validation_loss'):.4g} | {final(trial, 'validation_accuracy'):.4g} | "
                     f"{trial['verdict']}: {ADVICE[trial['verdict']]} |")
    return lines


def write_report(path: pathlib.Path, config, search: Search, summary: dict, stages: dict, overfit: dict,
                 plots: list[pathlib.Path]) -> None:
    """`tune_report.md`: each step's finding, its trials and its plot."""
    if jax.process_index() != 0:
        return
    flag = lambda finding: f"**flagged**: {finding}" if finding else "ok"  # noqa: E731
    images = {plot.stem: plot.name for plot in plots}
    lines = [f"# Tuning {config.model} ({config.optimizer}, batch {config.batch_size})", "",
             f"Recipe result: learning rate **{summary['learning_rate']:.3g}**, weight decay "
             f"**{summary['weight_decay']:g}** (ranked by validation {search.rank_by}; "
             f"{summary['validation_examples']} validation examples).", "",
             "## 1. Initial loss, regularisation off",
             f"{summary['initial_loss']:.4g} against {summary['expected_initial_loss']:.4g} expected: "
             f"{flag(summary['initial_loss_finding'])}.", "",
             f"## 2. Overfit {search.overfit_batches} minibatches, regularisation off",
             f"Training accuracy {summary['overfit_accuracy']:.4g} after {overfit['num_steps']} steps at learning "
             f"rate {overfit['learning_rate']:g}: {flag(summary['overfit_finding'])}.", ""]
    sections = [("## 3. Learning rates for ~100 iterations", "learning rates (step 3)", "learning_rates",
                 f"Lowest training loss: learning rate {summary['step3_learning_rate']:g}."),
                ("## 4. Coarse search: random beside grid", "random search (step 4)", "search",
                 "Random search (log-uniform learning rates):"),
                ("", "grid search (step 4)", None, "Grid (as many trials, few distinct learning rates):"),
                ("## 5–6. The best trained longer, curves read by the rules", "longer (step 5)", "curves",
                 "Rules: " + "; ".join(f"{verdict}: {advice}" for verdict, advice in ADVICE.items()) + "."),
                ("## Check: dense learning-rate sweep", "dense sweep (check)", "dense_sweep", "")]
    for heading, key, image, text in sections:
        if not stages[key]:
            continue
        lines += [heading, text, "", *_trial_table(stages[key]), ""] if heading else [text, "", *_trial_table(stages[key]), ""]
        if image in images:
            lines += [f"![{image}]({images[image]})", ""]
    if "dense_sweep_learning_rate" in summary:
        per_seed = ", ".join(f"{rate:.3g}" for rate in summary["dense_sweep_best_per_seed"])
        lines.append(f"Dense sweep's best learning rate (lowest mean over {summary['dense_sweep_seeds']} seeds) "
                     f"{summary['dense_sweep_learning_rate']:.3g}; the recipe's is {summary['ratio_to_dense_sweep']:.3g} × "
                     f"it. Each seed's own best: {per_seed}.")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
