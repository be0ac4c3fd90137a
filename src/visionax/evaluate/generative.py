"""Sample quality of a generative model, measured in the features of a classifier trained on the same
data (by `experiments.classify`): a Fréchet distance between Gaussians fitted to the features of real
and generated images, and a classifier score (the Inception Score's formula with this classifier).

These are *not* Inception's FID and IS: the classifier is a small network trained on the dataset at
hand, so the numbers compare models on that dataset only, never with published FID/IS figures.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from visionax import models
from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.evaluate.batches import map_over_batches
from visionax.models.common import FEATURE_MAP
from visionax.parallel import DataParallel
from visionax.train.checkpoint import load_variables

__all__ = ["frechet_distance", "classifier_score", "class_histogram", "ScoringClassifier",
           "load_scoring_classifier"]


def _mean_and_covariance(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"features must be [n >= 2, dim], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(real_features: np.ndarray, fake_features: np.ndarray) -> float:
    """The Fréchet (2-Wasserstein) distance between N(μ_r, Σ_r) and N(μ_g, Σ_g) fitted to two sets of
    features `[n, dim]`: ‖μ_r − μ_g‖² + Tr(Σ_r + Σ_g − 2 (Σ_r Σ_g)^{1/2}), in float64.

    Tr (Σ_r Σ_g)^{1/2} = Σ √λ_i over the eigenvalues λ_i of the symmetric PSD matrix
    Σ_r^{1/2} Σ_g Σ_r^{1/2}, which has the same spectrum as Σ_r Σ_g (no complex square root).
    """
    mean_real, covariance_real = _mean_and_covariance(real_features)
    mean_fake, covariance_fake = _mean_and_covariance(fake_features)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance_real)
    root_real = (eigenvectors * np.sqrt(np.maximum(eigenvalues, 0.0))) @ eigenvectors.T
    product = root_real @ covariance_fake @ root_real
    trace_root = np.sum(np.sqrt(np.maximum(np.linalg.eigvalsh((product + product.T) / 2), 0.0)))
    distance = (np.sum((mean_real - mean_fake) ** 2) + np.trace(covariance_real) + np.trace(covariance_fake)
                - 2.0 * trace_root)
    return float(max(distance, 0.0))


def classifier_score(probabilities: np.ndarray) -> float:
    """exp(E_x KL(p(y|x) ‖ p(y))) for class probabilities `[n, classes]` of generated images, with
    p(y) their mean: between 1 (every image gets the same distribution) and the number of classes
    (confident predictions spread evenly over the classes)."""
    probabilities = np.asarray(probabilities, np.float64)
    marginal = probabilities.mean(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * (np.log(probabilities) - np.log(marginal)), 0.0)
    return float(np.exp(np.mean(np.sum(terms, axis=1))))


def class_histogram(probabilities: np.ndarray) -> list[int]:
    """How many images the classifier assigns to each class (argmax), `[classes]`."""
    probabilities = np.asarray(probabilities)
    return np.bincount(np.argmax(probabilities, axis=1), minlength=probabilities.shape[1]).tolist()


@dataclasses.dataclass(frozen=True)
class ScoringClassifier:
    """A trained zoo classifier (`model`, `variables`) whose pooled last feature map gives the
    features and whose softmax gives the class probabilities of uint8 images."""

    model: object
    variables: dict
    workdir: str

    def _per_device(self, variables: dict, images: jax.Array) -> jax.Array:
        """`[batch, dim + classes]`: the pooled last feature map, then the class probabilities."""
        logits, state = self.model.apply(variables, model_input(images), train=False, mutable=["intermediates"])
        features = jnp.mean(state["intermediates"][FEATURE_MAP][-1].astype(jnp.float32), axis=(1, 2))
        return jnp.concatenate([features, jax.nn.softmax(logits.astype(jnp.float32), axis=-1)], axis=-1)

    def outputs(self, data_parallel: DataParallel, images: np.ndarray, batch_size: int
                ) -> tuple[np.ndarray, np.ndarray]:
        """(features `[n, dim]`, class probabilities `[n, classes]`) of uint8 images `[n, h, w, c]`."""
        both = map_over_batches(data_parallel, self._per_device, self.variables, images, batch_size)
        num_classes = self.model.num_classes
        return both[:, :-num_classes], both[:, -num_classes:]

    def scores(self, data_parallel: DataParallel, real_images: np.ndarray, fake_images: np.ndarray,
               batch_size: int) -> dict:
        """`{"frechet_distance", "classifier_score", "class_histogram", "real_classifier_score"}` of
        generated uint8 images against real ones (the real images' own score is the ceiling)."""
        real_features, real_probabilities = self.outputs(data_parallel, real_images, batch_size)
        fake_features, fake_probabilities = self.outputs(data_parallel, fake_images, batch_size)
        return {"frechet_distance": frechet_distance(real_features, fake_features),
                "classifier_score": classifier_score(fake_probabilities),
                "class_histogram": class_histogram(fake_probabilities),
                "real_classifier_score": classifier_score(real_probabilities)}


def load_scoring_classifier(workdir: str | pathlib.Path) -> ScoringClassifier:
    """The classifier trained in `workdir` by `experiments.classify` (its config.json names the model,
    its options and the number of classes; its newest checkpoint gives the weights)."""
    config_path = pathlib.Path(workdir) / "config.json"
    if not config_path.is_file():
        raise UserError(f"{str(workdir)!r} is not the workdir of a classify run (no config.json); pass the "
                        "--workdir of `python -m experiments.classify` on the same data as --config.classifier_from")
    config = ml_collections.ConfigDict(json.loads(config_path.read_text()))
    variables, _ = load_variables(workdir)
    head = variables["params"].get("head")
    if head is None:
        raise UserError(f"the checkpoint in {str(workdir)!r} has no classifier head; pass the --workdir of "
                        "`python -m experiments.classify` as --config.classifier_from")
    num_classes = int(np.shape(head["kernel"])[-1])
    options = {key: tuple(value) if isinstance(value, list) else value  # JSON turned tuples into lists
               for key, value in config.get("model_options", ml_collections.ConfigDict()).to_dict().items()}
    model = models.get_model(config.model, num_classes=num_classes, conv_impl=config.get("conv_impl", "xla"),
                             **options)
    return ScoringClassifier(model, jax.tree.map(jnp.asarray, variables), str(workdir))
