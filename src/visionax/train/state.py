"""The training state: one pytree holding everything a step reads and writes, built one way.

`create_train_state` is the single path from a model, an optimizer and an input shape to a step-0
state, for every experiment: it initialises the variables, loads a pretrained encoder when
`init_from` names a workdir (`visionax.train.pretrained`), and fills the fields of the state class.
Methods with more state subclass `TrainState` with typed fields (MoCo: `visionax.ssl.moco`), and
the checkpoint holds exactly the pytree fields (`savable`), never the static `apply_fn` and `tx`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import optax

from visionax.optim.averaging import PolyakAverage, PolyakState
from visionax.train.pretrained import load_pretrained

__all__ = ["TrainState", "AveragedTrainState", "initial_variables", "create_train_state"]


class TrainState(flax.struct.PyTreeNode):
    """step, params, batch_stats, opt_state and rng; `apply_fn` (the model's `apply`) and `tx` (the
    optimizer) are static: not saved, not traced."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @property
    def variables(self) -> dict:
        """The Flax variables to pass to `apply_fn`."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}

    def apply_gradients(self, grads, **changes) -> "TrainState":
        """One optimizer update θ ← θ + tx(g), step + 1, with other fields replaced by `changes`."""
        updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
        return self.replace(
            step=self.step + 1,
            params=optax.apply_updates(self.params, updates),
            opt_state=opt_state,
            **changes,
        )

    def savable(self) -> dict:
        """The pytree that is checkpointed: every pytree field, as nested dicts of arrays."""
        return flax.serialization.to_state_dict(self)

    def restored(self, savable: dict) -> "TrainState":
        """This state with the fields of a restored `savable()` pytree."""
        return flax.serialization.from_state_dict(self, savable)


class AveragedTrainState(TrainState):
    """A state that also keeps the Polyak average θ̄ of its parameters (`visionax.optim.averaging`),
    updated by the step after every optimizer update; evaluate with `average.params`."""

    average: PolyakState

    def update_average(self, averager: PolyakAverage) -> "AveragedTrainState":
        return self.replace(average=averager.update(self.params, self.average))


def initial_variables(rng: jax.Array, model, image_shape: tuple[int, ...]) -> dict:
    """`model.init` on one zero image `[1, *image_shape]` in evaluation mode (compiled)."""
    init = jax.jit(functools.partial(model.init, train=False))
    return init(rng, jnp.zeros((1, *image_shape), jnp.float32))


def create_train_state(
    rng: jax.Array,
    model,
    tx: optax.GradientTransformation,
    image_shape: tuple[int, ...],
    *,
    init_from: str = "",
    state_class: type[TrainState] = TrainState,
    fields: Callable[[dict, jax.Array], dict] | None = None,
) -> TrainState:
    """The step-0 `state_class` of `model` on images of `image_shape` `(height, width, channels)`.

    `init_from`: a workdir whose latest checkpoint provides the encoder's weights (a head of another
    shape stays freshly initialised; one line says what was loaded). `fields(variables, rng)`
    returns the values of the fields `state_class` adds to `TrainState` (e.g. MoCo's key encoder
    and queue), computed from the initial (or loaded) variables.
    """
    if fields is None:
        (init_rng, state_rng), fields_rng = jax.random.split(rng), None
    else:
        init_rng, fields_rng, state_rng = jax.random.split(rng, 3)
    variables = initial_variables(init_rng, model, image_shape)
    if init_from:
        variables = load_pretrained(variables, init_from)
    params = variables["params"]
    return state_class(
        step=jnp.zeros((), jnp.int32),
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        opt_state=tx.init(params),
        rng=state_rng,
        apply_fn=model.apply,
        tx=tx,
        **(fields(variables, fields_rng) if fields is not None else {}),
    )
