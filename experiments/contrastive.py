"""What the SimCLR and MoCo experiments share: the encoder, the data, the kNN monitor, and the final
comparison of the learned features with raw pixels and a randomly initialised encoder."""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import ml_collections
import numpy as np

from visionax import data, evaluate, models, parallel, report
from visionax.data.augment import ViewSettings
from visionax.data.pipeline import Batches
from visionax.ssl.heads import ContrastiveModel, ProjectionHead
from visionax.train.precision import compute_dtype
from visionax.ssl import simclr


@dataclasses.dataclass(frozen=True)
class Setup:
    """The mesh, the training batches and the labelled arrays the evaluations use."""

    data_parallel: parallel.DataParallel
    batches: Batches
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


def setup(config: ml_collections.ConfigDict) -> Setup:
    """Check the config against the devices and read the dataset (raises UserError on bad input)."""
    parallel.initialize_distributed()
    data_parallel = parallel.DataParallel(parallel.make_mesh(), config.parallel)
    parallel.check_batch_size(config.batch_size, data_parallel.device_count)
    spec = data.DatasetSpec.from_config(config.data)
    train_source = data.data_source(spec, "train")
    batches = Batches(train_source, config.batch_size, config.seed)
    train_images, train_labels = data.as_arrays(train_source)
    test_images, test_labels = data.as_arrays(data.data_source(spec, "test"))
    return Setup(data_parallel, batches, train_images, train_labels, test_images, test_labels,
                 data.num_classes(spec))


def view_settings(config: ml_collections.ConfigDict, image_shape) -> ViewSettings:
    """The two views' augmentation (SimCLR's pipeline) at the dataset's image size, from `config.augment`."""
    augment = config.augment
    return ViewSettings(
        output_size=tuple(image_shape[:2]), area_range=(augment.min_area, 1.0),
        flip_probability=augment.flip_probability, jitter_strength=augment.jitter_strength,
        jitter_probability=augment.jitter_probability, grayscale_probability=augment.grayscale_probability,
        blur_probability=augment.blur_probability,
    )


def encoder(config: ml_collections.ConfigDict, *, bn_axis_name: str | None, bn_splits: int = 1):
    """The backbone `config.model` as a feature extractor `[batch, h, w, c] → [batch, features]`,
    with split BatchNorm (statistics per slice of batch/bn_splits examples) when `bn_splits` > 1."""
    options = config.model_options.to_dict() | ({"bn_splits": bn_splits} if bn_splits > 1 else {})
    return models.get_model(
        config.model, num_classes=None, dtype=compute_dtype(config.dtype), conv_impl=config.conv_impl,
        bn_axis_name=bn_axis_name, **options,
    )


def features(setup: Setup, model: ContrastiveModel, variables: dict, images: np.ndarray, batch_size: int):
    """Encoder features `[n, features]` of uint8 `images`, computed over the device mesh."""
    embed = functools.partial(simclr.embed, model)
    return parallel.map_batches(setup.data_parallel, embed, variables, images, batch_size)


def knn_monitor(setup: Setup, model: ContrastiveModel, batch_size: int):
    """An `evaluate(state, step)` for the loop: weighted kNN (k=200, τ=0.1) test accuracy."""

    def monitor(state, step):
        train = features(setup, model, state.variables, setup.train_images, batch_size)
        test = features(setup, model, state.variables, setup.test_images, batch_size)
        return {"knn_accuracy": evaluate.knn_accuracy(
            train, setup.train_labels, test, setup.test_labels, setup.num_classes)}

    return monitor


def compare_features(setup: Setup, model, learned_variables, random_variables, batch_size: int) -> list[list]:
    """Rows of (features, dimension, kNN accuracy, linear-probe accuracy) for raw pixels, the
    randomly initialised encoder and the learned encoder."""
    flat = lambda images: images.reshape(len(images), -1).astype(np.float32) / 255.0
    candidates = {
        "raw pixels": (flat(setup.train_images), flat(setup.test_images)),
        "random encoder": tuple(features(setup, model, random_variables, images, batch_size)
                                for images in (setup.train_images, setup.test_images)),
        "learned encoder": tuple(features(setup, model, learned_variables, images, batch_size)
                                 for images in (setup.train_images, setup.test_images)),
    }
    rows = []
    for name, (train, test) in candidates.items():
        if name == "raw pixels":  # each image minus its own mean: cosine = Pearson correlation,
            # the measure of the data README's reference kNN figure for CIFAR-10 (44.2%)
            train = train - train.mean(axis=1, keepdims=True)
            test = test - test.mean(axis=1, keepdims=True)
        knn = evaluate.knn_accuracy(train, setup.train_labels, test, setup.test_labels, setup.num_classes)
        probe, _ = evaluate.linear_probe(train, setup.train_labels, test, setup.test_labels, setup.num_classes)
        rows.append([name, train.shape[1], knn, probe])
    return rows


def plot_embedding(setup: Setup, model, variables, batch_size: int, path: pathlib.Path) -> pathlib.Path:
    """A 2-D PCA of the test embeddings coloured by class, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    test = features(setup, model, variables, setup.test_images, batch_size)
    centred = test - test.mean(axis=0)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    figure, axis = plt.subplots(figsize=(5, 4.5))
    scatter = axis.scatter(projected[:, 0], projected[:, 1], c=setup.test_labels, cmap="tab10", s=8)
    axis.legend(*scatter.legend_elements(), title="class", fontsize=7, loc="best")
    axis.set_title("test embeddings, PCA")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def finish(config, workdir, setup: Setup, model, state, random_variables, method: str) -> dict[str, float]:
    """Print the comparison table, write the plots, and return the learned encoder's accuracies."""
    rows = compare_features(setup, model, state.variables, random_variables, config.batch_size)
    if jax.process_index() == 0:
        workdir = pathlib.Path(workdir)
        curves = report.plot_curves(workdir, [("train", "loss"), ("eval", "knn_accuracy")], "curves.png")
        embedding = plot_embedding(setup, model, state.variables, config.batch_size, workdir / "embedding.png")
        print(report.table(
            ["features", "dimension", "kNN accuracy", "linear probe accuracy"], rows,
            title=f"{method} on {config.data.name}: {int(state.step)} steps, "
                  f"{setup.data_parallel.device_count} device(s), {config.model}",
        ))
        print(f"plots: {curves} {embedding}")
    learned = rows[-1]
    return {"knn_accuracy": learned[2], "probe_accuracy": learned[3],
            "pixel_knn_accuracy": rows[0][2], "random_knn_accuracy": rows[1][2], "steps": int(state.step)}


def projection_head(config: ml_collections.ConfigDict, *, bn_axis_name: str | None) -> ProjectionHead:
    """SimCLR's MLP head: `head_layers` Dense layers, BatchNorm after each hidden one."""
    return ProjectionHead(hidden_dim=config.head_hidden_dim, output_dim=config.projection_dim,
                          num_layers=config.head_layers, batch_norm=True, bn_axis_name=bn_axis_name,
                          dtype=compute_dtype(config.dtype))
