"""Start a model from the encoder of another run (`config.init_from=<workdir>`).

The encoder is the part of a model before its classifier: for an encoder-plus-projection-head model
(SimCLR, MoCo: `visionax.ssl.heads.ContrastiveModel`) its `encoder` subtree, for a zoo classifier
everything but its `head` Dense layer. Every encoder tensor (parameters and BatchNorm statistics)
is copied from the newest checkpoint of the workdir; a classifier head that the source lacks, or
whose shape differs (another number of classes), keeps its fresh initialisation. One line says
what was loaded and what was not; an encoder of another architecture is a one-line error.
"""

from __future__ import annotations

import math
import flax.traverse_util
import jax
import numpy as np

from visionax.errors import UserError
from visionax.train.checkpoint import load_variables

ENCODER = "encoder"
HEAD = "head"

__all__ = ["load_pretrained"]


def _encoder_part(tree: dict) -> tuple[dict, tuple[str, ...]]:
    """(the encoder subtree of a params/batch_stats tree, its path prefix)."""
    if ENCODER in tree:
        return tree[ENCODER], (ENCODER,)
    return tree, ()


def _describe(path: tuple[str, ...], shape) -> str:
    return f"{'/'.join(path)} {list(shape)}"


def load_pretrained(variables: dict, workdir: str) -> dict:
    """`variables` (`{"params", "batch_stats"}` of the model to train) with its encoder replaced by
    the encoder of the newest checkpoint in `workdir`; prints what was loaded (process 0)."""
    source, step = load_variables(workdir)
    loaded, fresh, loaded_parameters = 0, [], 0
    result = {}
    for collection, target_tree in variables.items():
        target_part, prefix = _encoder_part(dict(target_tree))
        source_part, _ = _encoder_part(dict(source.get(collection, {})))
        target_flat = flax.traverse_util.flatten_dict(target_part)
        source_flat = flax.traverse_util.flatten_dict(source_part)
        merged = {}
        for path, leaf in target_flat.items():
            pretrained = source_flat.get(path)
            in_head = path[0] == HEAD
            if pretrained is not None and np.shape(pretrained) == np.shape(leaf):
                merged[path] = np.asarray(pretrained).astype(leaf.dtype)
                loaded += 1
                loaded_parameters += math.prod(np.shape(leaf)) if collection == "params" else 0
            elif in_head:
                merged[path] = leaf
                fresh.append(_describe((*prefix, *path), np.shape(leaf)))
            else:
                found = "missing" if pretrained is None else f"of shape {list(np.shape(pretrained))}"
                raise UserError(
                    f"init_from {workdir!r}: the encoder tensor {_describe(path, np.shape(leaf))} is {found} "
                    "there; use the --config.model and --config.model_options of the pretrained run")
        part = flax.traverse_util.unflatten_dict(merged)
        result[collection] = {**target_tree, ENCODER: part} if prefix else part
        if collection == "params":  # the parts beside the encoder (a projection head) stay fresh
            fresh += [f"{name}/ ({len(jax.tree.leaves(subtree))} tensors)"
                      for name, subtree in target_tree.items() if prefix and name != ENCODER]
    if loaded == 0:
        raise UserError(f"init_from {workdir!r}: no tensor of its encoder fits this model; use the "
                        "--config.model and --config.model_options of the pretrained run")
    if jax.process_index() == 0:
        rest = f"; freshly initialised: {', '.join(fresh)}" if fresh else "; nothing freshly initialised"
        print(f"init_from {workdir} (step {step}): loaded {loaded} encoder tensors "
              f"({loaded_parameters:,} parameters){rest}")
    return jax.tree.map(jax.numpy.asarray, result)
