"""Lecture 12: the generative adversarial network (DCGAN) — the original game's minimax generator loss
against the non-saturating one, side by side: `python -m experiments.gan`.

Each loss of `config.losses` trains the same DCGAN (`visionax.generative.gan`) from the same seed on
the same batches and noise, in `<workdir>/<loss>` through the shared training loop (a run killed and
started again resumes exactly: both players' parameters and optimizer states are in the checkpoint).
Every `eval_every` steps and at the end, `num_samples` images of a fixed z are scored against as many
test images in the features of a classifier trained on the same data (`experiments.sample_quality`):
a Fréchet distance and a classifier score (not Inception's FID and IS), and the class histogram of
the samples. A GAN defines no likelihood: its test bits/dim column is empty.

Writes `samples_<loss>.png`, `curves.png` (both runs' losses, D(x), D(G(z)) and the Fréchet distance
against the step), `generator_gradient.png` (the generator's loss and its gradient against D(G(z))
under both losses, from `jax.grad` of `visionax.losses.adversarial`: the minimax gradient vanishes
where the generator is poor), `latent_arithmetic.png` (z̄_a − z̄_b + z̄_c of samples the classifier
assigns to classes a, b, c, decoded) and `results.json`.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from experiments import sample_quality
from visionax import cli, parallel, registry, report
from visionax.errors import UserError, require_positive
from visionax.evaluate.generative import ScoringClassifier
from visionax.generative import gan
from visionax.generative.likelihood import uniform_bits_per_dim
from visionax.layers.conv import CONV_IMPLS
from visionax.losses.adversarial import generator_loss
from visionax.models.costs import parameter_total
from visionax.train import checkpoint, loop, optimizer, setup
from visionax.train.metrics import read_metrics
from visionax.train.precision import compute_dtype

NAME = "gan"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
LABELS = {"non_saturating": "DCGAN, non-saturating", "minimax": "DCGAN, minimax", "least_squares": "LSGAN"}
POSITIVE_KEYS = ("batch_size", "epochs", "latent_dim", "discriminator_steps", "num_samples", "classifier_epochs")
SAMPLE_STREAM = 1  # z of the scored samples: fold_in(PRNGKey(seed), SAMPLE_STREAM), fixed for a run
GRID = 8  # samples.png: 8 × 8 samples; latent arithmetic: up to 8 samples a class
ARITHMETIC_NOISE = 0.25  # DCGAN's uniform noise ±0.25 added to the arithmetic's result


def check_widths(config: ml_collections.ConfigDict, key: str) -> tuple[int, ...]:
    """`config[key]` as a non-empty tuple of positive integers."""
    widths = config[key]
    if isinstance(widths, int):
        widths = (widths,)
    if not widths or not all(isinstance(width, int) and width >= 1 for width in widths):
        raise UserError(f"{key}={widths!r} must be positive integers; pass e.g. --config.{key}='(64, 32)'")
    return tuple(widths)


def parse_classes(text: str) -> tuple[int, ...]:
    """The classes a, b, c of `latent_arithmetic` ("a,b,c"; "": chosen from the samples)."""
    if not str(text).strip():
        return ()
    try:
        classes = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        classes = ()
    if len(classes) != 3 or min(classes) < 0:
        raise UserError(f"latent_arithmetic={text!r} must be three class indices a,b,c (z̄_a − z̄_b + z̄_c) or "
                        "empty; pass e.g. --config.latent_arithmetic=7,1,4")
    return classes


def check_config(config: ml_collections.ConfigDict) -> list[str]:
    """The loss names; a UserError for any bad value that needs no data."""
    losses = list(registry.lookup_many(gan.GAME_LOSSES, config.losses, "GAN loss", "losses"))
    require_positive(config, POSITIVE_KEYS)
    if config.num_samples < 2:
        raise UserError(f"num_samples={config.num_samples}: the Fréchet distance needs at least 2 samples; "
                        "pass e.g. --config.num_samples=100")
    for key in ("generator_learning_rate", "discriminator_learning_rate"):
        optimizer.check_learning_rate(config[key], key)
    for key in ("beta1", "beta2"):
        if not 0 <= config[key] < 1:
            raise UserError(f"{key}={config[key]} must be in [0, 1); pass e.g. --config.{key}=0.5")
    for key in ("generator_widths", "discriminator_widths"):
        check_widths(config, key)
    compute_dtype(config.dtype)
    registry.lookup(dict.fromkeys(CONV_IMPLS), config.conv_impl, "conv_impl")
    parse_classes(config.latent_arithmetic)
    return losses


def check_run(config: ml_collections.ConfigDict, run: setup.Setup) -> None:
    """The checks that need the data and the devices: image sides a multiple of 2^len(widths), the
    local batch divisible by discriminator_steps, enough test images, classes that exist."""
    height, width, _ = run.image_shape
    for key in ("generator_widths", "discriminator_widths"):
        scale = 2 ** len(check_widths(config, key))
        if height % scale or width % scale:
            raise UserError(f"{key} has {len(config[key])} widths, one ×2 (or ÷2) each: the {height}×{width} images "
                            f"need sides that are multiples of {scale}; pass fewer widths")
    local_batch = config.batch_size // run.data_parallel.device_count
    if local_batch % config.discriminator_steps:
        raise UserError(f"discriminator_steps={config.discriminator_steps} does not divide the {local_batch} images "
                        f"a device reads (batch_size={config.batch_size} on {run.data_parallel.device_count} "
                        "device(s)); pass a batch_size that is a multiple of devices × discriminator_steps")
    if config.num_samples > len(run.test.images):
        raise UserError(f"num_samples={config.num_samples} exceeds the {len(run.test.images)} test images the samples "
                        f"are scored against; pass --config.num_samples={len(run.test.images)} or less")
    classes = parse_classes(config.latent_arithmetic)
    if classes and max(classes) >= run.num_classes:
        raise UserError(f"latent_arithmetic={config.latent_arithmetic!r} names a class the {run.num_classes}-class "
                        f"data does not have; use indices 0..{run.num_classes - 1}")


def first_loss(config: ml_collections.ConfigDict) -> str:
    return next(iter(registry.lookup_many(gan.GAME_LOSSES, config.losses, "GAN loss", "losses")))


def create(config: ml_collections.ConfigDict, run: setup.Setup, loss: str = ""):
    """The models `(generator, discriminator)` (the generator's BatchNorm synchronised over the mesh),
    the step-0 state and the per-device step of `loss` (default: the first of `config.losses`)."""
    settings = gan.GANSettings(config.latent_dim, loss or first_loss(config), config.discriminator_steps)
    dtype = compute_dtype(config.dtype)
    generator = gan.Generator(run.image_shape, check_widths(config, "generator_widths"), dtype,
                              bn_axis_name=parallel.DATA_AXIS)
    discriminator = gan.Discriminator(check_widths(config, "discriminator_widths"), dtype, config.conv_impl)
    adam = functools.partial(optax.adam, b1=config.beta1, b2=config.beta2)
    state = gan.create_gan_state(jax.random.PRNGKey(config.seed), generator, discriminator,
                                 adam(config.generator_learning_rate), adam(config.discriminator_learning_rate),
                                 config.latent_dim)
    return (generator, discriminator), state, functools.partial(gan.train_step, settings=settings)


def sample_noise(config: ml_collections.ConfigDict) -> jax.Array:
    """The fixed z `[num_samples, latent_dim]` of the scored samples (the same for every loss and evaluation)."""
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), SAMPLE_STREAM)
    return gan.latent_noise(key, jnp.arange(config.num_samples), config.latent_dim)


@dataclasses.dataclass(frozen=True)
class Trained:
    """One loss's run: its generator, final state, samples uint8 `[num_samples, h, w, c]`, final scores, timings and
    the evaluations along the way (`[{"step", "frechet_distance", "classifier_score"}]`)."""

    generator: gan.Generator
    state: gan.GANState
    samples: np.ndarray
    scores: dict
    training_seconds: float
    sampling_seconds_per_image: float
    evaluations: list


def train_one(config: ml_collections.ConfigDict, run: setup.Setup, loss: str, workdir: pathlib.Path,
              classifier: ScoringClassifier, real: np.ndarray, z: jax.Array) -> Trained:
    """Train the GAN of `loss` in `workdir` (resuming its checkpoint), scoring its samples of `z`
    against `real` every `eval_every` steps and at the end (the loop's last evaluation, of the final
    state, gives the final samples and scores); then time the sampling."""
    (generator, _), state, step = create(config, run, loss)
    sample = jax.jit(functools.partial(gan.generate, generator.apply))
    evaluation_seconds, last = [], {}

    def evaluate(state, _step):
        started = time.perf_counter()
        last["samples"] = np.asarray(sample(state.generator_variables, z))
        last["scores"] = classifier.scores(run.data_parallel, real, last["samples"], config.batch_size)
        evaluation_seconds.append(time.perf_counter() - started)
        return {key: last["scores"][key] for key in ("frechet_distance", "classifier_score")}

    started = time.perf_counter()
    state = loop.fit(ml_collections.ConfigDict(config.to_dict() | {"loss": loss}), workdir, state=state,
                     per_device_step=step, batches=run.batches, data_parallel=run.data_parallel,
                     num_steps=config.epochs * run.batches.steps_per_epoch, evaluate=evaluate)
    training_seconds = time.perf_counter() - started - sum(evaluation_seconds)
    started = time.perf_counter()  # `sample` is compiled: the generator's time alone
    jax.block_until_ready(sample(state.generator_variables, z))
    sampling_seconds = time.perf_counter() - started
    evaluations = [{key: record[key] for key in ("step", "frechet_distance", "classifier_score")}
                   for record in read_metrics(workdir) if record["split"] == "eval"]
    return Trained(generator, state, last["samples"], last["scores"], training_seconds, sampling_seconds / len(z),
                   evaluations)


def plot_samples(samples: np.ndarray, histogram: list[int], label: str, path: pathlib.Path) -> pathlib.Path:
    fig, axes = report.figure(panel_size=(6.0, 6.4))
    report.show_images(axes[0, 0], samples[:GRID * GRID], GRID)
    axes[0, 0].set_title(f"classes of all {len(samples)} samples: {histogram}", fontsize=8)
    return report.save(fig, path, title=f"{label}: samples")


def logit(probability: jax.Array) -> jax.Array:
    """σ⁻¹(p) = log p − log(1 − p)."""
    return jnp.log(probability) - jnp.log1p(-probability)


GENERATOR_LOSS_NAMES = {"minimax": "minimax: log(1 − D(G(z)))", "non_saturating": "non-saturating: −log D(G(z))"}


@jax.jit
def generator_gradient_curves(probabilities: jax.Array) -> dict:
    """For each kind of generator loss, at D(G(z)) = `probabilities` `[n]`: the loss, |∂loss/∂D(G(z))|
    (jax.grad of `generator_loss` through the logit σ⁻¹(D)) and |∂loss/∂logit| (what reaches G),
    each `[n]`."""
    curves = {}
    for kind in GENERATOR_LOSS_NAMES:
        def loss_of_d(probability, kind=kind):
            return generator_loss(logit(probability)[None], kind)

        def loss_of_logit(value, kind=kind):
            return generator_loss(value[None], kind)

        curves[kind] = (jax.vmap(loss_of_d)(probabilities), jnp.abs(jax.vmap(jax.grad(loss_of_d))(probabilities)),
                        jnp.abs(jax.vmap(jax.grad(loss_of_logit))(logit(probabilities))))
    return curves


def plot_generator_gradient(path: pathlib.Path) -> pathlib.Path:
    """The generator's loss, |∂loss/∂D(G(z))| and |∂loss/∂logit| against D(G(z)) in (0, 1) for the
    minimax and the non-saturating loss (`generator_gradient_curves`)."""
    probabilities = jnp.linspace(1e-3, 1 - 1e-3, 500)
    curves = jax.device_get(generator_gradient_curves(probabilities))
    fig, axes = report.figure(1, 3, panel_size=(4.5, 3.8))
    for (kind, name), style in zip(GENERATOR_LOSS_NAMES.items(), ("-", "--")):
        for axis, values in zip(axes[0], curves[kind]):
            axis.plot(probabilities, values, style, label=name)
    titles = ("generator loss", "|∂loss / ∂D(G(z))|", "|∂loss / ∂logit|: what reaches G")
    for axis, title in zip(axes[0], titles):
        axis.set_xlabel("D(G(z))")
        axis.set_title(title)
        axis.axvspan(0, 0.1, color="gray", alpha=0.15)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0, 1].set_yscale("log")
    axes[0, 0].text(0.01, 0.02, "poor generator", transform=axes[0, 0].transAxes, fontsize=7)
    return report.save(fig, path, title="The generator's gradient: the minimax loss saturates where G is poor")


def latent_arithmetic(config: ml_collections.ConfigDict, run: setup.Setup, classifier: ScoringClassifier,
                      trained: Trained, z: jax.Array, label: str, path: pathlib.Path) -> tuple[pathlib.Path, dict]:
    """z̄_a − z̄_b + z̄_c, z̄ the mean z of the (up to 8) samples the classifier assigns to a class most
    confidently, decoded with 7 copies plus uniform noise ±0.25 (DCGAN's figure 7). The figure's rows:
    the samples of a, b and c, each followed by its decoded z̄, then the arithmetic's 8 images.
    Classes: `latent_arithmetic`, or the three that the most samples are assigned to. Returns the
    figure and `{"classes", "samples_per_class", "result_classes"}` (None when a class got no sample)."""
    _, probabilities = classifier.outputs(run.data_parallel, trained.samples, config.batch_size)
    assigned, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
    classes = parse_classes(config.latent_arithmetic) or tuple(
        int(index) for index in np.argsort(-np.bincount(assigned, minlength=run.num_classes), kind="stable")[:3])
    chosen = [np.flatnonzero(assigned == index)[np.argsort(-confidence[assigned == index], kind="stable")][:GRID]
              for index in classes]
    decode = jax.jit(functools.partial(gan.generate, trained.generator.apply))
    variables, z = trained.state.generator_variables, np.asarray(z)
    blank = np.full((GRID + 1, *trained.samples.shape[1:]), 255, np.uint8)
    rows = []
    for members in chosen:
        row = blank.copy()
        row[:len(members)] = trained.samples[members]
        if len(members):
            row[GRID] = np.asarray(decode(variables, z[members].mean(axis=0, keepdims=True)))[0]
        rows.append(row)
    result_classes, result_row = None, blank.copy()
    if all(len(members) for members in chosen):
        means = [z[members].mean(axis=0) for members in chosen]
        noise = jax.random.uniform(jax.random.PRNGKey(config.seed), (GRID - 1, config.latent_dim),
                                   minval=-ARITHMETIC_NOISE, maxval=ARITHMETIC_NOISE)
        result = means[0] - means[1] + means[2]
        result_row[:GRID] = np.asarray(decode(variables, jnp.concatenate([result[None], result + noise])))
        _, result_probabilities = classifier.outputs(run.data_parallel, result_row[:GRID], config.batch_size)
        result_classes = result_probabilities.argmax(axis=1).tolist()
    fig, axes = report.figure(panel_size=(5.5, 3.2))
    report.show_images(axes[0, 0], np.concatenate(rows + [result_row]), GRID + 1)
    a, b, c = classes
    counts = ", ".join(f"{index}: {len(members)}" for index, members in zip(classes, chosen))
    axes[0, 0].set_xlabel(f"rows: samples of classes {a}, {b}, {c} ({counts}), each then its z̄ decoded; "
                          f"last row: z̄({a}) − z̄({b}) + z̄({c}), then with ±{ARITHMETIC_NOISE} noise, "
                          f"classified as {result_classes}", fontsize=6, wrap=True)
    summary = {"classes": list(classes), "samples_per_class": [len(members) for members in chosen],
               "result_classes": result_classes}
    return report.save(fig, path, title=f"{label}: latent arithmetic z̄({a}) − z̄({b}) + z̄({c})"), summary


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    losses = check_config(config)
    run = setup.setup(config)
    check_run(config, run)
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    workdir = pathlib.Path(workdir)
    classifier = sample_quality.scoring_classifier(config, workdir)
    real = run.test.images[:config.num_samples]
    z = sample_noise(config)
    trained = {loss: train_one(config, run, loss, workdir / loss, classifier, real, z) for loss in losses}

    rows, models = [], {}
    for loss, result in trained.items():
        parameters = parameter_total(result.state.params.generator)
        rows.append([LABELS[loss], parameters, None, result.scores["frechet_distance"],
                     result.scores["classifier_score"], round(result.training_seconds, 1),
                     result.sampling_seconds_per_image, result.scores["class_histogram"]])
        models[LABELS[loss]] = {
            "parameters": parameters, "discriminator_parameters": parameter_total(result.state.params.discriminator),
            "test_bits_per_dim": None, "frechet_distance": result.scores["frechet_distance"],
            "classifier_score": result.scores["classifier_score"], "training_seconds": result.training_seconds,
            "sampling_seconds_per_image": result.sampling_seconds_per_image,
            "class_histogram": result.scores["class_histogram"], "evaluations": result.evaluations}
    steps = config.epochs * run.batches.steps_per_epoch
    table = report.Table(
        f"DCGAN on {run.spec.name}: {steps} rounds of {config.discriminator_steps} discriminator update(s) and one "
        f"generator update, batch {config.batch_size}; {config.num_samples} samples scored against as many test "
        "images (Fréchet distance and classifier score in the features of a classifier trained on this data, not "
        "Inception's); test bits/dim —: a GAN defines no likelihood",
        ["model", "parameters", "test bits/dim", "Fréchet distance", "classifier score", "training seconds",
         "sampling seconds/image", "class histogram"], rows)
    first = losses[0]
    plots = [plot_samples(result.samples, result.scores["class_histogram"], LABELS[loss],
                          workdir / f"samples_{loss}.png") for loss, result in trained.items()]
    plots.append(report.plot_runs(
        {LABELS[loss]: workdir / loss for loss in losses},
        [("train", "discriminator_loss"), ("train", "generator_loss"), ("train", "d_real"), ("train", "d_fake"),
         ("eval", "frechet_distance")], workdir / "curves.png", title="DCGAN: the two players' losses, "
        "D(x), D(G(z)) and the samples' Fréchet distance"))
    plots.append(plot_generator_gradient(workdir / "generator_gradient.png"))
    arithmetic_plot, arithmetic = latent_arithmetic(config, run, classifier, trained[first], z, LABELS[first],
                                                    workdir / "latent_arithmetic.png")
    plots.append(arithmetic_plot)
    levels = len(np.unique(run.test.images))  # the data's grey or colour levels: 17 for the digits, 256 for photographs
    return report.finish(workdir, table, plots=plots, summary={
        "models": models, "uniform_bits_per_dim": uniform_bits_per_dim(levels),
        "real_classifier_score": trained[first].scores["real_classifier_score"],
        "latent_arithmetic": {"model": LABELS[first], **arithmetic},
        "note": "a GAN defines no likelihood, so it has no test bits/dim; its samples are scored instead",
        "steps": steps})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
