"""Contrastive losses of self-supervised learning (lecture 14): NT-Xent (SimCLR), InfoNCE (MoCo),
CLIP's symmetric image-text cross-entropy and CPC's InfoNCE over patches predicted rows ahead.

All take an optional `axis_name`. Without it they are ordinary single-device losses over the batch
they are given. With it (inside `jax.shard_map(check_vma=False)` or `jax.pmap`, as
`visionax.parallel.DataParallel` runs a step) each device passes its local slice of the batch and
gets back the loss of the GLOBAL batch, the same value on every device.

Gradient convention (pmap semantics). Under these wrappers a gradient taken inside the step is the
gradient, with respect to the device's own inputs, of the sum over devices of what every device
returns (the transpose of `psum` sums the cotangents of all devices, the transpose of `all_gather`
is `psum_scatter`). Every device returns the global loss L, so the gradient with respect to the
local inputs is `device_count × ∂L/∂(local inputs)`: exactly what a local-mean loss gives in plain
data parallelism, and averaging the parameter gradients with `lax.pmean` (as every visionax step
does) yields the full-batch gradient ∇L.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["clip_loss", "cpc_accuracy", "cpc_info_nce", "cpc_logits", "info_nce", "l2_normalize", "nt_xent"]


def l2_normalize(vectors: jax.Array, epsilon: float = 1e-12) -> jax.Array:
    """Rows scaled to unit length: v / max(‖v‖₂, ε) for `vectors` `[batch, dim]`."""
    norm = jnp.sqrt(jnp.sum(jnp.square(vectors), axis=-1, keepdims=True))
    return vectors / jnp.maximum(norm, epsilon)


def _at_least_float32(x: jax.Array) -> jax.Array:
    """bfloat16/float16 embeddings computed in float32; float32 and float64 unchanged."""
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def nt_xent(
    z1: jax.Array, z2: jax.Array, temperature: float, axis_name: str | None = None
) -> jax.Array:
    """SimCLR's normalised-temperature cross-entropy over the global batch of N pairs:
    L = 1/(2N) Σ_k [ℓ(k, k') + ℓ(k', k)], ℓ(i, j) = −log(exp(s_ij/τ) / Σ_{m≠i} exp(s_im/τ)),
    with s the cosine similarity and k' the other view of example k.

    `z1`, `z2`: `[local_batch, dim]` projections of the two views of the same images (normalised
    here). With `axis_name`, each device all-gathers the embeddings of every device (`[N, dim]` per
    view), computes only its own `2·local_batch` rows of the `[2N, 2N]` similarity matrix (memory
    `O(local_batch × N)` per device), with its labels offset by `axis_index · local_batch`, sums
    their ℓ, divides by 2N and `psum`s the partial sums: the returned scalar is L on every device.
    See the module docstring for the gradient convention.
    """
    local_batch = z1.shape[0]
    z1, z2 = l2_normalize(_at_least_float32(z1)), l2_normalize(_at_least_float32(z2))
    if axis_name is None:
        all_z1, all_z2, offset = z1, z2, 0
    else:
        all_z1 = jax.lax.all_gather(z1, axis_name, tiled=True)
        all_z2 = jax.lax.all_gather(z2, axis_name, tiled=True)
        offset = jax.lax.axis_index(axis_name) * local_batch
    global_batch = all_z1.shape[0]
    candidates = jnp.concatenate([all_z1, all_z2], axis=0)  # [2N, dim]: view 1 rows, then view 2
    anchors = jnp.concatenate([z1, z2], axis=0)  # [2 local_batch, dim]
    logits = anchors @ candidates.T / temperature  # [2 local_batch, 2N]
    rows = offset + jnp.arange(local_batch)
    self_index = jnp.concatenate([rows, rows + global_batch])
    positive_index = jnp.concatenate([rows + global_batch, rows])
    is_self = jax.nn.one_hot(self_index, 2 * global_batch, dtype=jnp.bool_)
    logits = jnp.where(is_self, -jnp.inf, logits)
    row_losses = optax.softmax_cross_entropy_with_integer_labels(logits, positive_index)
    partial = jnp.sum(row_losses) / (2 * global_batch)
    return partial if axis_name is None else jax.lax.psum(partial, axis_name)


def info_nce(
    query: jax.Array,
    key: jax.Array,
    queue: jax.Array,
    temperature: float,
    axis_name: str | None = None,
) -> jax.Array:
    """MoCo's InfoNCE: the mean over queries of −log(exp(q·k⁺/τ) / (exp(q·k⁺/τ) + Σ_j exp(q·n_j/τ))),
    i.e. cross-entropy toward the positive of the logits [q·k⁺, q·queue]/τ.

    `query`, `key`: `[local_batch, dim]` (row i of `key` is the positive of query i); `queue`:
    `[queue_size, dim]` negatives. All three are L2-normalised here. The gradient flows into `key`
    and `queue` too: MoCo stops it (`lax.stop_gradient`) itself. With `axis_name` the mean is taken
    over the global batch (`lax.pmean` of the local means: equal local batches), the same value on
    every device, with the gradient convention of the module docstring.
    """
    query, key, queue = (l2_normalize(_at_least_float32(x)) for x in (query, key, queue))
    positive = jnp.sum(query * key, axis=-1, keepdims=True)  # [local_batch, 1]
    negatives = query @ queue.T  # [local_batch, queue_size]
    logits = jnp.concatenate([positive, negatives], axis=-1) / temperature
    labels = jnp.zeros(query.shape[0], jnp.int32)
    local_mean = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    return local_mean if axis_name is None else jax.lax.pmean(local_mean, axis_name)


def clip_loss(
    image_embeddings: jax.Array,
    text_embeddings: jax.Array,
    logit_scale: jax.Array | float,
    axis_name: str | None = None,
) -> jax.Array:
    """CLIP's symmetric cross-entropy over the global batch of N image-text pairs:
    L = 1/(2N) Σ_k [−log softmax_j(e^t · u_k·v_j)_k − log softmax_j(e^t · v_k·u_j)_k],
    with u, v the L2-normalised image and text embeddings, t = `logit_scale` and pair k the positive.

    `image_embeddings`, `text_embeddings`: `[local_batch, dim]` (row i of each is the same pair;
    normalised here). `logit_scale`: scalar, the log of the inverse temperature; CLIP learns it,
    initialised at log(1/0.07), and clips it at log(100) — the caller clips. With `axis_name`, each
    device all-gathers both embeddings (`[N, dim]` each), computes only its own rows of both
    directions (its images against all N texts and its texts against all N images: `[local_batch,
    N]` logits each), with its labels offset by `axis_index · local_batch`, sums their losses,
    divides by 2N and `psum`s the partial sums: the returned scalar is L on every device. See the
    module docstring for the gradient convention; the gradient of a replicated `logit_scale` on one
    device is `device_count ×` its own rows' share of ∂L/∂t, so `lax.pmean` over devices gives ∂L/∂t.
    """
    local_batch = image_embeddings.shape[0]
    images = l2_normalize(_at_least_float32(image_embeddings))
    texts = l2_normalize(_at_least_float32(text_embeddings))
    scale = jnp.exp(_at_least_float32(jnp.asarray(logit_scale)))
    if axis_name is None:
        all_images, all_texts, offset = images, texts, 0
    else:
        all_images = jax.lax.all_gather(images, axis_name, tiled=True)
        all_texts = jax.lax.all_gather(texts, axis_name, tiled=True)
        offset = jax.lax.axis_index(axis_name) * local_batch
    global_batch = all_images.shape[0]
    labels = offset + jnp.arange(local_batch)
    image_to_text = scale * images @ all_texts.T  # [local_batch, N]
    text_to_image = scale * texts @ all_images.T  # [local_batch, N]
    row_losses = (optax.softmax_cross_entropy_with_integer_labels(image_to_text, labels)
                  + optax.softmax_cross_entropy_with_integer_labels(text_to_image, labels))
    partial = jnp.sum(row_losses) / (2 * global_batch)
    return partial if axis_name is None else jax.lax.psum(partial, axis_name)


def cpc_logits(
    predictions: jax.Array, targets: jax.Array, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array]:
    """CPC's scores s = p·z of every valid prediction p against every patch embedding z of the global
    batch, and the index of each prediction's positive: `(logits [M, N·rows·cols], labels [M])`.

    `predictions`: `[local_batch, steps, rows, cols, dim]`, entry `[b, k − 1, t, j]` the prediction
    W_k·c_{t,j} of image b's patch k rows below (t + k, j); only rows t < rows − k have a target, the
    others are ignored. `targets`: `[local_batch, rows, cols, dim]`, the patch embeddings z. The M =
    local_batch · cols · Σ_{k=1..K} (rows − k) valid predictions are ordered by step k, then image,
    row, column. Candidates are the patches of all N images (all-gathered with `axis_name`) in the
    order image, row, column, so the positive of image b's prediction (k, t, j) is index
    ((offset + b)·rows + t + k)·cols + j with offset = `axis_index · local_batch`. Scores are plain
    dot products (the bilinear f_k = exp(zᵀ W_k c_t) of Oord et al., W_k applied by the caller),
    computed in at least float32; memory `O(local_batch × N)` per device.
    """
    local_batch, steps, rows, cols, _ = predictions.shape
    if targets.shape[:3] != (local_batch, rows, cols) or targets.shape[-1] != predictions.shape[-1]:
        raise ValueError(f"targets {targets.shape} must be [batch, rows, cols, dim] of predictions "
                         f"{predictions.shape} ([batch, steps, rows, cols, dim])")
    if not rows > steps:
        raise ValueError(f"predicting {steps} rows ahead needs more than {steps} rows, got {rows}")
    predictions, targets = _at_least_float32(predictions), _at_least_float32(targets)
    if axis_name is None:
        all_targets, offset = targets, 0
    else:
        all_targets = jax.lax.all_gather(targets, axis_name, tiled=True)
        offset = jax.lax.axis_index(axis_name) * local_batch
    candidates = all_targets.reshape(-1, all_targets.shape[-1])  # [N·rows·cols, dim]
    images = offset + jnp.arange(local_batch)[:, None, None]
    columns = jnp.arange(cols)[None, None, :]
    valid, labels = [], []
    for step in range(1, steps + 1):
        valid.append(predictions[:, step - 1, : rows - step].reshape(-1, predictions.shape[-1]))
        target_rows = jnp.arange(step, rows)[None, :, None]
        labels.append(((images * rows + target_rows) * cols + columns).reshape(-1))
    queries = jnp.concatenate(valid, axis=0)  # [M, dim]
    return queries @ candidates.T, jnp.concatenate(labels)


def _valid_prediction_count(predictions: jax.Array, axis_name: str | None) -> int:
    """N · cols · Σ_k (rows − k): the number of predictions with a target in the global batch."""
    local_batch, steps, rows, cols, _ = predictions.shape
    devices = 1 if axis_name is None else jax.lax.axis_size(axis_name)
    return devices * local_batch * cols * sum(rows - step for step in range(1, steps + 1))


def cpc_info_nce(predictions: jax.Array, targets: jax.Array, axis_name: str | None = None) -> jax.Array:
    """Contrastive predictive coding's InfoNCE (Oord et al. 2018; Hénaff et al. 2019) over the global
    batch: L = mean over images n, steps k = 1..K, rows t < rows − k and columns j of
    −log(exp(p·z_{n,t+k,j}) / Σ_{(m,u,v)} exp(p·z_{m,u,v})), p = W_k·c_{n,t,j}, the sum running over
    every patch (m, u, v) of every image of the global batch: the positive plus all other patches
    of its own image and of the other images as negatives.

    `predictions` `[local_batch, steps, rows, cols, dim]` and `targets` `[local_batch, rows, cols,
    dim]` as `cpc_logits` takes them (which see for the layout and the label offsets). With
    `axis_name`, each device scores only its own predictions against the all-gathered targets of all
    devices, sums their cross-entropies, divides by the global count N·cols·Σ_k (rows − k) and `psum`s
    the partial sums: the returned scalar is L on every device. See the module docstring for the
    gradient convention.
    """
    logits, labels = cpc_logits(predictions, targets, axis_name)
    partial = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
    partial = partial / _valid_prediction_count(predictions, axis_name)
    return partial if axis_name is None else jax.lax.psum(partial, axis_name)


def cpc_accuracy(predictions: jax.Array, targets: jax.Array, axis_name: str | None = None) -> jax.Array:
    """The fraction of CPC's valid predictions over the global batch whose positive scores strictly
    highest among all candidates of `cpc_logits` (ties count as wrong); the same on every device."""
    logits, labels = cpc_logits(predictions, targets, axis_name)
    positive = jnp.take_along_axis(logits, labels[:, None], axis=1)
    is_other = ~jax.nn.one_hot(labels, logits.shape[1], dtype=jnp.bool_)
    best_other = jnp.max(jnp.where(is_other, logits, -jnp.inf), axis=1, keepdims=True)
    partial = jnp.sum(positive > best_other) / _valid_prediction_count(predictions, axis_name)
    return partial if axis_name is None else jax.lax.psum(partial, axis_name)
