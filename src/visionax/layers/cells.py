"""The vanilla RNN, LSTM and GRU as Flax cells for `flax.linen.RNN`, holding the course's parameters
(`Wx`, `Wh`, `b`; the GRU's `bx`, `bh`) and computing with the barebone steps of
`visionax.layers.recurrent`, so that weights trained with the course's code load as they are.

Each cell follows `nn.RNNCellBase`: `cell(carry, x_t) -> (carry', h_t)` with x_t `[..., D]`,
`initialize_carry(rng, input_shape)` and `num_feature_axes = 1`. The carry keeps the dtype it came
in (float32 from `initialize_carry`) while the step computes in `dtype`, so that a bfloat16 cell
accumulates its state in float32 and runs inside `nn.RNN`'s scan. The LSTM's carry is `(c, h)`, in
Flax's order, so a visionax cell and a Flax cell are interchangeable inside `nn.RNN`.

The mapping to Flax's cells (`to_flax_params` / `from_flax_params`): Flax keeps one `[D, H]` Dense
per gate (input side `i*`, hidden side `h*`).
- `SimpleCell`: `i` = (Wx, b), `h` = Wh without bias.
- `LSTMCell`: `ii if io ig` are the four column blocks of Wx in the course's order i, f, o, g
  (Flax computes in the order i, f, g, o; the names are what matter); the hidden-side Dense `hi hf ho
  hg` carry the blocks of Wh and **all** the biases: Flax's LSTM has no input-side bias, so b maps to
  the hidden-side biases and back.
- `GRUCell`: `ir iz in` = blocks of Wx with the blocks of bx; `hr hz hn` = blocks of Wh, and only
  `hn` has a bias (bh_n): Flax has no bh_r, bh_z, which enter r and z only through their sum with
  bx_r, bx_z, so they are folded into `ir`, `iz`'s biases (and come back as 0).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from visionax.layers import recurrent

__all__ = ["GRUCell", "LSTMCell", "SimpleRNNCell", "from_flax_params", "to_flax_params"]

_GATES = {"SimpleRNNCell": ("",), "LSTMCell": ("i", "f", "o", "g"), "GRUCell": ("r", "z", "n")}


def per_gate(initializer: nn.initializers.Initializer, gates: int) -> nn.initializers.Initializer:
    """`initializer` applied to each of the `gates` column blocks `[rows, H]` of a `[rows, gates·H]`
    matrix with its own key, as Flax initialises one Dense per gate."""
    def init(key, shape, dtype=jnp.float32):
        rows, columns = shape
        keys = jax.random.split(key, gates)
        return jnp.concatenate([initializer(k, (rows, columns // gates), dtype) for k in keys], axis=1)
    return init


class _Cell(nn.RNNCellBase):
    features: int
    kernel_init: nn.initializers.Initializer = nn.initializers.lecun_normal()
    recurrent_kernel_init: nn.initializers.Initializer = nn.initializers.orthogonal()
    bias_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    carry_init: nn.initializers.Initializer = nn.initializers.zeros_init()
    dtype: Any = None
    param_dtype: Any = jnp.float32

    def weights(self, inputs: jax.Array, gates: int, *bias_names: str) -> list[jax.Array]:
        """Wx `[D, gates·H]`, Wh `[H, gates·H]` and each named bias `[gates·H]`, promoted with the inputs."""
        width = gates * self.features
        params = [
            self.param("Wx", per_gate(self.kernel_init, gates), (inputs.shape[-1], width), self.param_dtype),
            self.param("Wh", per_gate(self.recurrent_kernel_init, gates), (self.features, width), self.param_dtype),
        ] + [self.param(name, self.bias_init, (width,), self.param_dtype) for name in bias_names]
        return list(nn.dtypes.promote_dtype(inputs, *params, dtype=self.dtype))

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> jax.Array:
        return self.carry_init(rng, input_shape[:-1] + (self.features,), self.param_dtype)

    @property
    def num_feature_axes(self) -> int:
        return 1


class SimpleRNNCell(_Cell):
    """The vanilla RNN cell: h' = tanh(x·Wx + h·Wh + b); carry h `[..., H]`."""

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        inputs, Wx, Wh, b = self.weights(inputs, 1, "b")
        h = recurrent.rnn_step(inputs, carry.astype(inputs.dtype), Wx, Wh, b)
        return h.astype(carry.dtype), h


class LSTMCell(_Cell):
    """The LSTM cell of `recurrent.lstm_step` (gates i, f, o, g of a = x·Wx + h·Wh + b); carry
    `(c, h)`, each `[..., H]`."""

    @nn.compact
    def __call__(self, carry: tuple[jax.Array, jax.Array], inputs: jax.Array):
        inputs, Wx, Wh, b = self.weights(inputs, 4, "b")
        c, h = (state.astype(inputs.dtype) for state in carry)
        h, c = recurrent.lstm_step(inputs, h, c, Wx, Wh, b)
        return (c.astype(carry[0].dtype), h.astype(carry[1].dtype)), h

    @nn.nowrap
    def initialize_carry(self, rng: jax.Array, input_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
        cell_key, hidden_key = jax.random.split(rng)
        return super().initialize_carry(cell_key, input_shape), super().initialize_carry(hidden_key, input_shape)


class GRUCell(_Cell):
    """The GRU cell of `recurrent.gru_step` (gates r, z, n; biases bx and bh); carry h `[..., H]`."""

    @nn.compact
    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        inputs, Wx, Wh, bx, bh = self.weights(inputs, 3, "bx", "bh")
        h = recurrent.gru_step(inputs, carry.astype(inputs.dtype), Wx, Wh, bx, bh)
        return h.astype(carry.dtype), h


def _blocks(matrix: jax.Array, gates: tuple[str, ...]) -> dict[str, jax.Array]:
    return dict(zip(gates, jnp.split(matrix, len(gates), axis=-1)))


def to_flax_params(cell: str, params: dict) -> dict:
    """A visionax cell's parameters (`"SimpleRNNCell"`, `"LSTMCell"` or `"GRUCell"`) as the
    parameters of the matching `flax.linen` cell (mapping in the module docstring)."""
    gates = _GATES[cell]
    Wx, Wh = _blocks(params["Wx"], gates), _blocks(params["Wh"], gates)
    if cell == "SimpleRNNCell":
        return {"i": {"kernel": params["Wx"], "bias": params["b"]}, "h": {"kernel": params["Wh"]}}
    if cell == "LSTMCell":
        b = _blocks(params["b"], gates)
        return {**{f"i{g}": {"kernel": Wx[g]} for g in gates},
                **{f"h{g}": {"kernel": Wh[g], "bias": b[g]} for g in gates}}
    bx, bh = _blocks(params["bx"], gates), _blocks(params["bh"], gates)
    return {"ir": {"kernel": Wx["r"], "bias": bx["r"] + bh["r"]}, "iz": {"kernel": Wx["z"], "bias": bx["z"] + bh["z"]},
            "in": {"kernel": Wx["n"], "bias": bx["n"]}, "hr": {"kernel": Wh["r"]}, "hz": {"kernel": Wh["z"]},
            "hn": {"kernel": Wh["n"], "bias": bh["n"]}}


def from_flax_params(cell: str, params: dict) -> dict:
    """The parameters of a `flax.linen` SimpleCell, LSTMCell or GRUCell as the visionax cell `cell`'s
    (the inverse of `to_flax_params` up to the GRU's folded bh_r, bh_z, which come back as 0)."""
    gates = _GATES[cell]
    if cell == "SimpleRNNCell":
        return {"Wx": params["i"]["kernel"], "Wh": params["h"]["kernel"], "b": params["i"]["bias"]}

    def joined(side, field):
        return jnp.concatenate([params[f"{side}{g}"][field] for g in gates], axis=-1)

    if cell == "LSTMCell":
        return {"Wx": joined("i", "kernel"), "Wh": joined("h", "kernel"), "b": joined("h", "bias")}
    zeros = jnp.zeros_like(params["hn"]["bias"])
    return {"Wx": joined("i", "kernel"), "Wh": joined("h", "kernel"), "bx": joined("i", "bias"),
            "bh": jnp.concatenate([zeros, zeros, params["hn"]["bias"]])}
