"""One two-layer network at the three abstraction levels of lecture 8 (barebone, Module, Sequential).

The network is f(x) = relu(x W1 + b1) W2 + b2 on flattened inputs, written three times:

| API | Flexibility | Convenience |
|---|---|---|
| Barebone (pure functions, explicit parameters) | High | Low |
| `flax.linen.Module` (`TwoLayerNet`) | High | Medium |
| `flax.linen.Sequential` (`two_layer_sequential`) | Low | High |

`module_variables` and `sequential_variables` map the barebone parameters
{W1, b1, W2, b2} onto the variables of the other two, so the same numbers go through all three.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.layers.init import kaiming

__all__ = [
    "init_params", "forward", "TwoLayerNet", "two_layer_sequential",
    "module_variables", "sequential_variables", "params_from_module",
]


# Level 1: barebone — parameters are a dict of arrays, the network a pure function.

def init_params(key: jax.Array, d_in: int, hidden: int, num_classes: int) -> dict[str, jax.Array]:
    """Parameters {W1 (d_in, hidden), b1, W2 (hidden, C), b2}: Kaiming-initialised weights, zero biases."""
    key1, key2 = jax.random.split(key)
    return {
        "W1": kaiming()(key1, (d_in, hidden)),
        "b1": jnp.zeros((hidden,)),
        "W2": kaiming()(key2, (hidden, num_classes)),
        "b2": jnp.zeros((num_classes,)),
    }


def forward(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Class scores relu(x W1 + b1) W2 + b2 of the flattened inputs x (B, ...)."""
    x = x.reshape(x.shape[0], -1)
    hidden = jax.nn.relu(x @ params["W1"] + params["b1"])
    return hidden @ params["W2"] + params["b2"]


# Level 2: a flax.linen.Module — parameters are created and named by the layers.

class TwoLayerNet(nn.Module):
    """Two-layer network as a Module: Dense(hidden) → ReLU → Dense(num_classes) on flattened inputs."""

    hidden: int
    num_classes: int

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout, no BatchNorm: the same in training and evaluation
        x = x.reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(self.hidden, kernel_init=kaiming(), name="fc1")(x))
        return nn.Dense(self.num_classes, kernel_init=kaiming(), name="fc2")(x)


# Level 3: nn.Sequential — a list of layers applied in order.

def _flatten(x: jax.Array) -> jax.Array:
    return x.reshape(x.shape[0], -1)


def two_layer_sequential(hidden: int, num_classes: int) -> nn.Sequential:
    """Two-layer network as `nn.Sequential([flatten, Dense(hidden), relu, Dense(num_classes)])`."""
    return nn.Sequential([
        _flatten,
        nn.Dense(hidden, kernel_init=kaiming()),
        nn.relu,
        nn.Dense(num_classes, kernel_init=kaiming()),
    ])


def module_variables(params: dict[str, jax.Array]) -> dict[str, Any]:
    """The barebone parameters as `TwoLayerNet` variables."""
    return {"params": {
        "fc1": {"kernel": params["W1"], "bias": params["b1"]},
        "fc2": {"kernel": params["W2"], "bias": params["b2"]},
    }}


def sequential_variables(params: dict[str, jax.Array]) -> dict[str, Any]:
    """The barebone parameters as `two_layer_sequential` variables (its Dense layers are layers_1 and layers_3)."""
    return {"params": {
        "layers_1": {"kernel": params["W1"], "bias": params["b1"]},
        "layers_3": {"kernel": params["W2"], "bias": params["b2"]},
    }}


def params_from_module(variables: dict[str, Any]) -> dict[str, jax.Array]:
    """The inverse of `module_variables`: `TwoLayerNet` variables as barebone parameters."""
    p = variables["params"]
    return {"W1": p["fc1"]["kernel"], "b1": p["fc1"]["bias"], "W2": p["fc2"]["kernel"], "b2": p["fc2"]["bias"]}
