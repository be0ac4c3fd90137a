"""What the self-supervised step tests share: a tiny encoder with synchronised BatchNorm and a
step-0 state cast to float64, for 8-devices-equal-1 comparisons at 1e-10."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from visionax.parallel import DATA_AXIS
from visionax.train.state import create_train_state


class TinyEncoder(nn.Module):
    """3×3 convolution, BatchNorm synchronised over `bn_axis_name`, ReLU, global average pool."""

    bn_axis_name: str | None = DATA_AXIS

    @nn.compact
    def __call__(self, images, train=False):
        x = nn.Conv(4, (3, 3), use_bias=False)(images)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.bn_axis_name)(x)
        return jnp.mean(nn.relu(x), axis=(1, 2))


def float64_state(model, input_shape=(8, 8, 1)):
    """A step-0 state (SGD momentum 0.9 at 0.5) of `model` on inputs `[n, *input_shape]` whose
    parameters and statistics are float64 (call under `jax.enable_x64`)."""
    state = create_train_state(jax.random.key(0), model, optax.sgd(0.5, momentum=0.9), input_shape)
    params = jax.tree.map(lambda leaf: leaf.astype(jnp.float64), state.params)
    return state.replace(params=params, opt_state=state.tx.init(params),
                         batch_stats=jax.tree.map(lambda leaf: leaf.astype(jnp.float64), state.batch_stats))
