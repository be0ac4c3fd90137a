"""Training and evaluating the autoregressive image models by maximum likelihood: the models by name
(`MODELS`), the step-0 state, the per-device training step for `visionax.parallel.DataParallel`, and
the test-set bits per dimension over the device mesh.

Every model maps the quantised image q = quantize(x, levels) `[N, H, W, C]`, given as
`pixelcnn.level_input(q, levels)` in [0, 1], to logits `[N, H, W, C, levels]`; its loss is the
exact negative log-likelihood −(1/D) Σ_d ln p(q_d | q_{<d}) per sub-pixel (D = H·W·C), reported in
bits per dimension (`visionax.generative.likelihood.bits_per_dim`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from visionax import registry
from visionax.errors import UserError
from visionax.evaluate.batches import map_over_batches
from visionax.generative.likelihood import bits_per_dim, quantize
from visionax.generative.pixelcnn import PixelCNN, level_input
from visionax.generative.pixelrnn import RowLSTM
from visionax.parallel import DATA_AXIS, DataParallel
from visionax.train.state import TrainState

__all__ = ["MODELS", "LABELS", "get_model", "create_state", "train_step", "image_bits_per_dim",
           "dataset_bits_per_dim"]

MODELS = {"pixelcnn": functools.partial(PixelCNN, gated=False),
          "gated_pixelcnn": functools.partial(PixelCNN, gated=True),
          "row_lstm": RowLSTM}
LABELS = {"pixelcnn": "PixelCNN", "gated_pixelcnn": "gated PixelCNN", "row_lstm": "Row LSTM"}


def get_model(name: str, levels: int, color_channels: int, **options) -> nn.Module:
    """The model called `name` (a key of `MODELS`) for images of `color_channels` colours quantised
    to `levels` values, with `options` (features, depth, kernel_size, first_kernel_size,
    output_features, conv_impl, dtype); UserError for an unknown name or option, or widths the
    colour grouping cannot split."""
    build = registry.lookup(MODELS, name, "model")
    cls = build.func if isinstance(build, functools.partial) else build
    allowed = sorted(field.name for field in dataclasses.fields(cls)
                     if field.init and field.name not in ("parent", "name", "levels", "color_channels", "gated"))
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise UserError(f"model {name!r} has no option {', '.join(map(repr, unknown))}; its options are "
                        f"{', '.join(allowed)}")
    model = build(levels=levels, color_channels=color_channels, **options)
    for key in ("features", "output_features", "kernel_size", "first_kernel_size"):
        if getattr(model, key) < 1 or (key.endswith("kernel_size") and getattr(model, key) % 2 == 0):
            kind = "an odd" if key.endswith("kernel_size") else "a positive"
            raise UserError(f"{name}: {key}={getattr(model, key)} must be {kind} integer (masks need a centre); "
                            f"set --config.model_options.{name}.{key}")
    if model.depth < 0:
        raise UserError(f"{name}: depth={model.depth} must be >= 0; set --config.model_options.{name}.depth")
    if name != "pixelcnn" and model.features % color_channels:
        raise UserError(f"{name}: features={model.features} is not divisible by the {color_channels} colour "
                        f"channels; pass a multiple of {color_channels} as --config.model_options.{name}.features")
    return model


def create_state(rng: jax.Array, model: nn.Module, tx: optax.GradientTransformation,
                 image_shape: tuple[int, int, int]) -> TrainState:
    """The step-0 state of `model` on images `(H, W, C)` (parameters from `rng`; no batch statistics)."""
    params = jax.jit(model.init)(rng, jnp.zeros((1, *image_shape), jnp.float32))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                      rng=rng, apply_fn=model.apply, tx=tx)


def train_step(state: TrainState, batch: dict, *, levels: int) -> tuple[TrainState, dict]:
    """One Adam (or `state.tx`) update on this device's uint8 `batch["image"]` `[local_batch, H, W, C]`;
    returns the new state and `{"loss": NLL in nats per sub-pixel, "bits_per_dim": the same in bits}`
    of the global batch (gradients and metrics averaged over `DATA_AXIS`)."""
    values = quantize(batch["image"], levels)

    def loss_function(params):
        logits = state.apply_fn({"params": params}, level_input(values, levels))
        return bits_per_dim(logits, values) * math.log(2.0)

    loss, grads = jax.value_and_grad(loss_function)(state.params)
    metrics = lax.pmean({"loss": loss, "bits_per_dim": loss / math.log(2.0)}, DATA_AXIS)
    return state.apply_gradients(lax.pmean(grads, DATA_AXIS)), metrics


def image_bits_per_dim(params, images: jax.Array, *, apply_fn, levels: int) -> jax.Array:
    """Each uint8 image's negative log-likelihood in bits per sub-pixel `[N]` (`bits_per_dim` of its logits)."""
    values = quantize(images, levels)
    logits = apply_fn({"params": params}, level_input(values, levels))
    return jax.vmap(lambda one_logits, one_values: bits_per_dim(one_logits[None], one_values[None]))(logits, values)


def dataset_bits_per_dim(data_parallel: DataParallel, apply_fn, params, images: np.ndarray, levels: int,
                      batch_size: int) -> float:
    """The mean bits per sub-pixel of uint8 `images` `[n, H, W, C]` under the model, in padded
    batches of `batch_size` split across the mesh (every image has D sub-pixels, so the mean of the
    images' values is the mean over all sub-pixels)."""
    per_device = functools.partial(image_bits_per_dim, apply_fn=apply_fn, levels=levels)
    return float(np.mean(map_over_batches(data_parallel, per_device, params, images, batch_size), dtype=np.float64))
