"""The training state: one pytree holding everything a step reads and writes."""

from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import optax


@flax.struct.dataclass
class TrainState:
    """params, batch_stats, opt_state, step and rng, plus `extra` (e.g. MoCo's key encoder and queue).

    `apply_fn` and `tx` are static (not saved in checkpoints): the model's `apply` and the optimizer.
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: optax.OptState
    rng: jax.Array
    extra: Any
    apply_fn: Callable = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, *, apply_fn, variables, tx, rng, extra=None) -> "TrainState":
        """A step-0 state from Flax `variables` ({"params", optional "batch_stats"})."""
        params = variables["params"]
        return cls(
            step=jax.numpy.zeros((), jax.numpy.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=rng,
            extra={} if extra is None else extra,
            apply_fn=apply_fn,
            tx=tx,
        )

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
        """The pytree that is checkpointed (no static fields)."""
        return {
            "step": self.step, "params": self.params, "batch_stats": self.batch_stats,
            "opt_state": self.opt_state, "rng": self.rng, "extra": self.extra,
        }

    def restored(self, savable: dict) -> "TrainState":
        """This state with the fields of a restored `savable()` pytree."""
        return self.replace(**savable)
