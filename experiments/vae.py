"""Lecture 12: the variational autoencoder, an explicit density bounded from below.

One convolutional VAE (`visionax.generative.vae.VAE`) per latent size of `config.latent_sizes`, each
trained in `<workdir>/latent<size>` through the shared training loop (a run killed and started again
resumes exactly) by minimising the negative ELBO with one reparameterised sample per image, under
`DataParallel` on every device. On the test set it reports the negative ELBO and the tighter
importance-weighted estimate of −log p(x) (k = `iwae_samples` draws), in nats per image and bits per
dimension (with the discretised-logistic decoder an exact discrete likelihood of the quantised
images, comparable with PixelCNN's bits/dim and the uniform bound log₂ levels), and the quality of
its samples (the decoder's image for z ~ N(0, I)) in the features of a classifier trained on the same
data (`experiments.sample_quality`: a Fréchet distance and a classifier score, not Inception's).
Writes `reconstructions.png` (test images above their reconstructions from μ(x)), `samples.png`,
`interpolation.png` (decodes along the line between two test images' latent means), `manifold.png`
(latent size 2: decodes of a grid of the latent plane at N(0, 1) quantiles), `curves.png` and
`results.json`.
"""

from __future__ import annotations

import functools
import pathlib
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from experiments import sample_quality
from visionax import cli, parallel, registry, report
from visionax.errors import UserError, require_positive
from visionax.generative import vae
from visionax.generative.likelihood import uniform_bits_per_dim
from visionax.models.costs import parameter_total
from visionax.train import checkpoint, loop, optimizer, setup
from visionax.train.metrics import last_record
from visionax.train.precision import compute_dtype
from visionax.train.state import TrainState

NAME = "vae"
CONFIG = pathlib.Path(__file__).parent / "configs" / f"{NAME}.py"
POSITIVE_KEYS = ("width", "epochs", "iwae_samples", "eval_batch_size", "shown")
INTERPOLATION_PAIRS = 4  # rows of interpolation.png: test images (0, 1), (2, 3), ...
CURVES = [("train", "loss"), ("train", "kl"), ("eval", "negative_elbo_bits_per_dim"), ("eval", "iwae_bits_per_dim")]


def latent_sizes(config: ml_collections.ConfigDict) -> list[int]:
    """The distinct positive integers of the comma-separated `config.latent_sizes`."""
    try:
        sizes = [int(part) for part in str(config.latent_sizes).split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or len(set(sizes)) != len(sizes):
        raise UserError(f"latent_sizes={config.latent_sizes!r} must be distinct comma-separated positive integers; "
                        "pass e.g. --config.latent_sizes=16,2")
    return sizes


def check_config(config: ml_collections.ConfigDict):
    """The latent sizes and the decoder's likelihood; a UserError for any bad value that needs no data to see."""
    sizes = latent_sizes(config)
    decoder = registry.lookup(vae.DECODERS, config.decoder, "decoder")
    compute_dtype(config.dtype)
    require_positive(config, POSITIVE_KEYS)
    if not 2 <= config.levels <= 256:
        raise UserError(f"levels={config.levels} must be in 2..256 (values per sub-pixel of uint8 images); "
                        "pass e.g. --config.levels=256")
    for key in ("num_samples", "interpolation_steps", "manifold_size"):
        if config[key] < 2:
            raise UserError(f"{key}={config[key]} must be >= 2; set --config.{key} to an integer of at least 2")
    if config.eval_examples < 0:
        raise UserError(f"eval_examples={config.eval_examples} must be >= 0 (0: every test image)")
    return sizes, decoder(config.levels)


def check_data(config: ml_collections.ConfigDict, run: setup.Setup) -> np.ndarray:
    """The test images the evaluation reads; a UserError for a count the data cannot meet."""
    parallel.check_batch_size(config.eval_batch_size, run.data_parallel.device_count, "eval_batch_size")
    test = run.test.images
    for key in ("num_samples", "eval_examples", "shown"):
        if config[key] > len(test):
            raise UserError(f"{key}={config[key]} exceeds the {len(test)} test images; pass "
                            f"--config.{key}={len(test)} or less")
    if 2 * INTERPOLATION_PAIRS > len(test):
        raise UserError(f"the interpolations need {2 * INTERPOLATION_PAIRS} test images, the data has {len(test)}")
    return test[:config.eval_examples] if config.eval_examples else test


def create(config: ml_collections.ConfigDict, run: setup.Setup, latent_size: int | None = None):
    """The VAE with `latent_size` (default: the first of `config.latent_sizes`) for the images of `run`,
    its step-0 state (Adam with the config's schedule) and its per-device training step."""
    latent_size = latent_sizes(config)[0] if latent_size is None else latent_size
    model = vae.VAE(run.image_shape, latent_size, config.width, config.decoder, config.levels,
                    compute_dtype(config.dtype), config.conv_impl)
    steps_per_epoch = run.batches.steps_per_epoch
    tx = optimizer.create_optimizer(config, total_steps=config.epochs * steps_per_epoch,
                                    steps_per_epoch=steps_per_epoch)
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    params = jax.jit(model.init)(init_rng, jnp.zeros((1, *run.image_shape), jnp.uint8))["params"]
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                       rng=state_rng, apply_fn=model.apply, tx=tx)
    return model, state, functools.partial(vae.train_step, model=model)


def label(latent_size: int) -> str:
    return f"VAE, latent {latent_size}"


def show(axis, images: np.ndarray, title: str, row_labels: list[str] | None = None) -> None:
    """uint8 images `[rows, columns, h, w, c]` drawn as one grid on `axis`, with a label on each row when given."""
    report.show_images(axis, images.reshape(-1, *images.shape[2:]), images.shape[1], title, row_labels or ())


class Decoded:
    """A trained VAE's encoder means and decoded images, jitted once."""

    def __init__(self, model: vae.VAE, params):
        variables = {"params": params}
        self.model = model
        self._encode = jax.jit(lambda images: model.apply(variables, images, method=vae.VAE.encode)[0])
        self._images = jax.jit(lambda z: model.apply(variables, z, method=vae.VAE.images))

    def means(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self._encode(jnp.asarray(images)))

    def images(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self._images(jnp.asarray(z, jnp.float32)))

    def timed_samples(self, rng: jax.Array, count: int) -> tuple[np.ndarray, float]:
        """`count` decoded z ~ N(0, I) `[count, h, w, c]` and the seconds per image of a compiled call."""
        z = jax.random.normal(rng, (count, self.model.latent_size))
        self._images(z).block_until_ready()  # compile
        started = time.perf_counter()
        samples = self._images(z).block_until_ready()
        return np.asarray(samples), (time.perf_counter() - started) / count

    def interpolations(self, first: np.ndarray, second: np.ndarray, steps: int) -> np.ndarray:
        """`[pairs, steps, h, w, c]`: decodes of (1 − t) μ(a) + t μ(b) at `steps` evenly spaced t in [0, 1]."""
        start, end = self.means(first), self.means(second)
        fractions = np.linspace(0.0, 1.0, steps)[None, :, None]
        z = (1 - fractions) * start[:, None] + fractions * end[:, None]
        return self.images(z.reshape(-1, z.shape[-1])).reshape(len(first), steps, *self.model.image_shape)

    def manifold(self, size: int) -> np.ndarray:
        """`[size, size, h, w, c]`: decodes of the latent plane at the N(0, 1) quantiles (j + ½)/size,
        z₁ along the columns, z₂ decreasing down the rows."""
        quantiles = np.asarray(jax.scipy.special.ndtri((np.arange(size) + 0.5) / size))
        z = np.stack(np.meshgrid(quantiles, quantiles[::-1]), axis=-1).reshape(-1, 2)
        return self.images(z).reshape(size, size, *self.model.image_shape)


def figures(config: ml_collections.ConfigDict, workdir: pathlib.Path, test: np.ndarray,
            decoded: dict[int, Decoded], samples: dict[int, np.ndarray]) -> list[pathlib.Path]:
    """reconstructions.png, samples.png, interpolation.png and (latent size 2) manifold.png."""
    shown = test[:config.shown]
    fig, axes = report.figure(panel_size=(0.6 * config.shown, 0.7 * (1 + len(decoded))))
    rows = [shown] + [item.images(item.means(shown)) for item in decoded.values()]
    show(axes[0, 0], np.stack(rows), "test images above their reconstructions (decoded μ(x))",
         ["test"] + [f"latent {size}" for size in decoded])
    paths = [report.save(fig, workdir / "reconstructions.png")]

    fig, axes = report.figure(1, len(decoded), panel_size=(4.0, 4.0))
    for axis, (size, images) in zip(axes[0], samples.items()):
        columns = min(10, len(images))
        count = min(len(images), columns * columns) // columns * columns
        show(axis, images[:count].reshape(-1, columns, *images.shape[1:]), f"{label(size)}: z ~ N(0, I)")
    paths.append(report.save(fig, workdir / "samples.png", title="samples (the decoder's image)"))

    pairs, steps = INTERPOLATION_PAIRS, config.interpolation_steps
    first, second = test[0:2 * pairs:2], test[1:2 * pairs:2]
    fig, axes = report.figure(1, len(decoded), panel_size=(0.5 * (steps + 2), 0.6 * pairs + 0.6))
    for axis, (size, item) in zip(axes[0], decoded.items()):
        between = item.interpolations(first, second, steps)
        show(axis, np.concatenate([first[:, None], between, second[:, None]], axis=1),
             f"{label(size)}: test image, {steps} decodes of the line between latent means, test image")
    paths.append(report.save(fig, workdir / "interpolation.png"))

    planes = {size: item for size, item in decoded.items() if size == 2}
    if planes:
        fig, axes = report.figure(1, len(planes), panel_size=(5.0, 5.0))
        for axis, (size, item) in zip(axes[0], planes.items()):
            show(axis, item.manifold(config.manifold_size),
                 f"{label(size)}: decodes at N(0, 1) quantiles (z₁ →, z₂ ↑)")
        paths.append(report.save(fig, workdir / "manifold.png"))
    return paths


def train(config: ml_collections.ConfigDict, run: setup.Setup, test: np.ndarray, created: tuple,
          directory: pathlib.Path) -> tuple[Decoded, np.ndarray, dict]:
    """Train (or resume) one VAE of `create` in `directory`, evaluating its bounds on `test`; returns its
    decoder, its `num_samples` samples and its numbers (bounds, parameters, seconds)."""
    model, state, step = created

    def evaluate(state, _step):
        return vae.evaluate(run.data_parallel, model, {"params": state.params}, test,
                            jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), k=config.iwae_samples,
                            batch_size=config.eval_batch_size)

    started = time.perf_counter()
    state = loop.fit(ml_collections.ConfigDict(config.to_dict() | {"latent_size": model.latent_size}), directory,
                     state=state, per_device_step=step, batches=run.batches, data_parallel=run.data_parallel,
                     num_steps=config.epochs * run.batches.steps_per_epoch, evaluate=evaluate)
    training_seconds = time.perf_counter() - started
    decoded = Decoded(model, state.params)
    samples, seconds_per_image = decoded.timed_samples(jax.random.fold_in(jax.random.PRNGKey(config.seed), 2),
                                                       config.num_samples)
    evaluation = last_record(directory, "eval")
    return decoded, samples, {
        "latent_size": model.latent_size, "parameters": parameter_total(state.params), "steps": int(state.step),
        "test_bits_per_dim": evaluation["iwae_bits_per_dim"],
        "negative_elbo_bits_per_dim": evaluation["negative_elbo_bits_per_dim"],
        "iwae_nats": evaluation["iwae_nats"], "negative_elbo_nats": evaluation["negative_elbo_nats"],
        "training_seconds": round(training_seconds, 1), "sampling_seconds_per_image": seconds_per_image}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
    sizes, decoder = check_config(config)
    run = setup.setup(config)
    test = check_data(config, run)
    created = {size: create(config, run, size) for size in sizes}
    checkpoint.claim_workdir(workdir, config)  # everything checked: now the workdir is this run's
    workdir = pathlib.Path(workdir)
    runs, decoded, samples, models = {}, {}, {}, {}
    for size in sizes:
        runs[size] = workdir / f"latent{size}"
        decoded[size], samples[size], models[label(size)] = train(config, run, test, created[size], runs[size])
    classifier = sample_quality.scoring_classifier(config, workdir)
    real = run.test.images[:config.num_samples]
    for size in sizes:
        scores = classifier.scores(run.data_parallel, real, samples[size], config.eval_batch_size)
        real_classifier_score = scores.pop("real_classifier_score")  # the ceiling: the same for every model
        models[label(size)].update(scores)
    uniform = uniform_bits_per_dim(config.levels)
    rows = [[name, numbers["parameters"], numbers["test_bits_per_dim"], numbers["negative_elbo_bits_per_dim"],
             numbers["iwae_nats"], numbers["negative_elbo_nats"], numbers["frechet_distance"],
             numbers["classifier_score"], numbers["training_seconds"], numbers["sampling_seconds_per_image"]]
            for name, numbers in models.items()]
    if decoder.exact:
        rows.append([f"uniform over {config.levels} levels", None, uniform] + [None] * 7)
    likelihood = (f"discretised logistic over {config.levels} levels (exact discrete bits/dim)" if decoder.exact
                  else "Bernoulli on [0, 1] grey levels (a cross-entropy: not comparable with PixelCNN's bits/dim)")
    table = report.Table(
        f"VAEs on {run.spec.name}, {likelihood}; test bits/dim: importance-weighted, k = {config.iwae_samples}, "
        f"{len(test)} test images; samples: {config.num_samples} decoded z ~ N(0, I)",
        ["model", "parameters", "test bits/dim", "negative ELBO bits/dim", "IWAE nats/image",
         "negative ELBO nats/image", "Fréchet distance", "classifier score", "training seconds",
         "sampling seconds/image"], rows)
    plots = figures(config, workdir, run.test.images, decoded, samples)
    plots.append(report.plot_runs({label(size): path for size, path in runs.items()}, CURVES,
                                  workdir / "curves.png", title="VAE training (nats per image) and test bits/dim"))
    return report.finish(workdir, table, plots=plots, summary={
        "models": models, "uniform_bits_per_dim": uniform, "decoder": config.decoder, "levels": config.levels,
        "exact_discrete_likelihood": decoder.exact, "iwae_samples": config.iwae_samples, "test_images": len(test),
        "dimensions": int(np.prod(run.image_shape)),
        "real_classifier_score": real_classifier_score})


if __name__ == "__main__":
    cli.run(train_and_evaluate, CONFIG, NAME, docstring=__doc__)
