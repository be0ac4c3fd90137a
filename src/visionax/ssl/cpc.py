"""Contrastive predictive coding (Oord et al. 2018; Hénaff et al. 2019): cut each image into a grid of
overlapping patches, encode every patch to z_{t,j}, summarise the rows above with a causal context
network c_{t,j} = g(z_{≤t}), predict the patches k = 1…K rows below as W_k·c_{t,j}, and score each
prediction against every patch of the global batch with InfoNCE (`cpc_info_nce`).

The per-device `train_step` runs under `visionax.parallel.DataParallel` (`shard_map` or `pmap`): each
device encodes its own images and all-gathers only the patch embeddings z for the negatives (memory
per device ∝ local batch × global batch). The state is a plain `visionax.train.state.TrainState`.
BatchNorm in the patch encoder would normalise a patch with statistics of its neighbours (a leak
Hénaff et al. remove with layer normalisation): prefer an encoder without it.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from visionax.data.preprocess import model_input
from visionax.errors import UserError
from visionax.losses.contrastive import cpc_accuracy, cpc_info_nce
from visionax.parallel import DATA_AXIS
from visionax.train.state import TrainState

__all__ = [
    "CPCModel",
    "CPCSettings",
    "ColumnGRUContext",
    "RowCausalContext",
    "cpc_model",
    "embed",
    "grid_size",
    "patch_grid",
    "train_step",
]


def grid_size(image_size: int, patch_size: int, stride: int) -> int:
    """Patches along one side: ⌊(image_size − patch_size) / stride⌋ + 1."""
    return (image_size - patch_size) // stride + 1


def patch_grid(images: jax.Array, patch_size: int, stride: int) -> jax.Array:
    """Overlapping patches `[batch, rows, cols, patch_size, patch_size, c]` of `images` `[batch, h, w,
    c]`: patch (t, j) = images[:, t·stride : t·stride + patch_size, j·stride : j·stride + patch_size]
    (stride = patch_size / 2: 50% overlap); pixels past the last whole patch are dropped."""
    _, height, width, _ = images.shape
    if not 0 < patch_size <= min(height, width) or stride < 1:
        raise ValueError(f"patch_size={patch_size}, stride={stride} do not fit images {images.shape}")
    offsets = jnp.arange(patch_size)
    row_index = stride * jnp.arange(grid_size(height, patch_size, stride))[:, None] + offsets  # [rows, p]
    col_index = stride * jnp.arange(grid_size(width, patch_size, stride))[:, None] + offsets  # [cols, p]
    return images[:, row_index[:, None, :, None], col_index[None, :, None, :]]


class RowCausalContext(nn.Module):
    """A masked-convolution context c = g(z) `[batch, rows, cols, dim]` → `[batch, rows, cols,
    features]` where row t sees rows ≤ t only: x = Dense(z), then `layers` residual blocks x ← x +
    conv(relu(x)) whose `kernel_rows × kernel_cols` kernel is padded with kernel_rows − 1 rows on top
    and none below (the mask of the rows below the centre); receptive field layers·(kernel_rows − 1) + 1
    rows and layers·(kernel_cols − 1) + 1 columns."""

    features: int = 64
    layers: int = 2
    kernel_rows: int = 2
    kernel_cols: int = 3

    @nn.compact
    def __call__(self, embeddings: jax.Array) -> jax.Array:
        x = nn.Dense(self.features)(embeddings)
        half = self.kernel_cols // 2
        padding = ((self.kernel_rows - 1, 0), (half, self.kernel_cols - 1 - half))
        for _ in range(self.layers):
            x = x + nn.Conv(self.features, (self.kernel_rows, self.kernel_cols), padding=padding)(nn.relu(x))
        return x


class ColumnGRUContext(nn.Module):
    """A GRU running down each column: c_{t,j} = GRU(z_{0,j}, …, z_{t,j}), `[batch, rows, cols, dim]` →
    `[batch, rows, cols, features]`; row t sees rows ≤ t of its own column only."""

    features: int = 64

    @nn.compact
    def __call__(self, embeddings: jax.Array) -> jax.Array:
        batch, rows, cols, dim = embeddings.shape
        columns = embeddings.transpose(0, 2, 1, 3).reshape(batch * cols, rows, dim)
        context = nn.RNN(nn.GRUCell(self.features))(columns)  # [batch · cols, rows, features]
        return context.reshape(batch, cols, rows, self.features).transpose(0, 2, 1, 3)


class CPCModel(nn.Module):
    """Patches → `encoder` (patches `[n, p, p, c]` → features `[n, dim]`, called as `encoder(x,
    train=...)`) → z `[batch, rows, cols, dim]` → `context` (causal over rows) → K predictors W_k
    (Dense without bias, context features → dim). `__call__(images [batch, h, w, c])` returns
    `(predictions [batch, K, rows, cols, dim], z)`, prediction `[:, k − 1, t]` = W_k·c_t;
    `embed` the mean of z over the patches (evaluation mode)."""

    encoder: nn.Module
    context: nn.Module
    patch_size: int
    stride: int
    prediction_steps: int = 2

    def patch_embeddings(self, images: jax.Array, train: bool = False) -> jax.Array:
        """z `[batch, rows, cols, dim]`: the encoder applied to every patch of `patch_grid`."""
        patches = patch_grid(images, self.patch_size, self.stride)
        batch, rows, cols = patches.shape[:3]
        features = self.encoder(patches.reshape((-1,) + patches.shape[3:]), train=train)
        return features.reshape(batch, rows, cols, features.shape[-1])

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
        embeddings = self.patch_embeddings(images, train=train)
        context = self.context(embeddings)
        dim = embeddings.shape[-1]
        predictions = [nn.Dense(dim, use_bias=False, name=f"predictor_{step}")(context)
                       for step in range(1, self.prediction_steps + 1)]
        return jnp.stack(predictions, axis=1), embeddings

    def embed(self, images: jax.Array) -> jax.Array:
        """Features `[batch, dim]`: the patch embeddings averaged over the grid (evaluation mode)."""
        return jnp.mean(self.patch_embeddings(images, train=False), axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class CPCSettings:
    """CPC's hyperparameters: square patches of `patch_size` pixels every `stride` pixels, K =
    `prediction_steps` rows predicted ahead, and the context network ("conv": `RowCausalContext` of
    `context_layers` blocks; "gru": `ColumnGRUContext`) of `context_features` units. Validated here."""

    patch_size: int = 8
    stride: int = 4
    prediction_steps: int = 2
    context: str = "conv"
    context_features: int = 64
    context_layers: int = 2

    def __post_init__(self):
        if self.patch_size < 1 or self.stride < 1:
            raise UserError(f"patch_size={self.patch_size} and stride={self.stride} must be >= 1; "
                            "pass e.g. --config.patch_size=8 --config.stride=4")
        if self.prediction_steps < 1:
            raise UserError(f"prediction_steps={self.prediction_steps} must be >= 1; "
                            "pass e.g. --config.prediction_steps=2")
        if self.context not in ("conv", "gru"):
            raise UserError(f"context={self.context!r}: choose 'conv' (masked convolution) or 'gru'")
        if self.context_features < 1 or self.context_layers < 1:
            raise UserError("context_features and context_layers must be >= 1; pass e.g. --config.context_layers=2")

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> CPCSettings:
        return cls(patch_size=config.patch_size, stride=config.stride,
                   prediction_steps=config.prediction_steps, context=config.context,
                   context_features=config.context_features, context_layers=config.context_layers)

    def check_image_size(self, height: int, width: int) -> None:
        """A UserError unless images of `height × width` give more than `prediction_steps` patch rows."""
        if self.patch_size > min(height, width):
            raise UserError(f"patch_size={self.patch_size} exceeds the {height}×{width} images; "
                            f"pass e.g. --config.patch_size={min(height, width) // 2}")
        rows = grid_size(height, self.patch_size, self.stride)
        if rows <= self.prediction_steps:
            raise UserError(f"{rows} patch rows cannot predict {self.prediction_steps} rows ahead; lower "
                            f"--config.prediction_steps below {rows} or --config.stride")


def cpc_model(settings: CPCSettings, encoder: nn.Module) -> CPCModel:
    """The `CPCModel` of `settings` around a patch `encoder`."""
    if settings.context == "gru":
        context = ColumnGRUContext(settings.context_features)
    else:
        context = RowCausalContext(settings.context_features, layers=settings.context_layers)
    return CPCModel(encoder, context, settings.patch_size, settings.stride, settings.prediction_steps)


def embed(model: CPCModel, variables: dict, images: jax.Array) -> jax.Array:
    """Encoder features `[batch, dim]` (patch embeddings averaged over the grid, evaluation mode) of
    uint8 images `[batch, h, w, c]` through `model_input`: what the kNN monitor and the probe use."""
    return model.apply(variables, model_input(images), method=CPCModel.embed)


def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """One CPC step on this device's `batch["image"]` (uint8 `[local_batch, h, w, c]`): the sharded
    `cpc_info_nce` of the global batch, gradients averaged over devices. Returns the new state and
    `{"loss": L, "accuracy": the fraction of predictions whose positive scores highest}` (both of the
    global batch, pmean'ed over `DATA_AXIS`). Compile with `DataParallel.step`."""
    images = model_input(batch["image"])

    def loss_fn(params):
        (predictions, embeddings), updates = state.apply_fn(
            {**state.variables, "params": params}, images, train=True, mutable=["batch_stats"])
        loss = cpc_info_nce(predictions, embeddings, DATA_AXIS)
        return loss, (predictions, embeddings, updates.get("batch_stats", {}))

    (loss, (predictions, embeddings, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    accuracy = cpc_accuracy(predictions, embeddings, DATA_AXIS)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    batch_stats = jax.lax.pmean(batch_stats, DATA_AXIS)
    metrics = jax.lax.pmean({"loss": loss, "accuracy": accuracy}, DATA_AXIS)
    return state.apply_gradients(grads, batch_stats=batch_stats), metrics
