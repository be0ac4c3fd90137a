"""The barebone captioning loss against the course assignment's published numbers (its linspace
check), a NumPy float64 reference and centred finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.errors import UserError
from visionax.gradcheck import assert_grad_close
from visionax.models.captioning import rnn_captioning_loss


def linspace_check(cell):
    """The assignment's check: N, D, W, H = 10, 20, 30, 40, V = 3 (<NULL> = 0), T = 13, every
    parameter np.linspace(-1.4, 1.3) over its size, features linspace(-1.5, 0.3) for the RNN and
    linspace(-0.5, 1.7) for the LSTM, captions (arange(N·T) % V)."""
    N, D, W, H, V, T = 10, 20, 30, 40, 3, 13
    gates = 4 if cell == "lstm" else 1
    shapes = {"W_proj": (D, H), "b_proj": (H,), "W_embed": (V, W), "Wx": (W, gates * H), "Wh": (H, gates * H),
              "b": (gates * H,), "W_vocab": (H, V), "b_vocab": (V,)}
    params = {k: np.linspace(-1.4, 1.3, num=int(np.prod(s))).reshape(s) for k, s in shapes.items()}
    features = np.linspace(*((-0.5, 1.7) if cell == "lstm" else (-1.5, 0.3)), num=N * D).reshape(N, D)
    captions = (np.arange(N * T) % V).reshape(N, T)
    return params, features, captions


@pytest.mark.parametrize("cell, expected", [("rnn", 9.83235591003), ("lstm", 9.82445935443)])
def test_loss_equals_the_course_assignment(cell, expected):
    params, features, captions = linspace_check(cell)
    with jax.enable_x64():
        loss = jax.jit(rnn_captioning_loss, static_argnames=("cell", "null"))(
            jax.tree.map(jnp.asarray, params), jnp.asarray(features), jnp.asarray(captions), cell=cell)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-10)


def numpy_rnn_captioning_loss(params, features, captions, null=0):
    h = features @ params["W_proj"] + params["b_proj"]
    total = 0.0
    for t in range(captions.shape[1] - 1):
        h = np.tanh(params["W_embed"][captions[:, t]] @ params["Wx"] + h @ params["Wh"] + params["b"])
        scores = h @ params["W_vocab"] + params["b_vocab"]
        log_probabilities = scores - np.log(np.exp(scores - scores.max(1, keepdims=True)).sum(1, keepdims=True)) \
            - scores.max(1, keepdims=True)
        target = captions[:, t + 1]
        total -= np.sum((target != null) * log_probabilities[np.arange(len(target)), target])
    return total / captions.shape[0]


def small_problem(seed=0):
    rng = np.random.default_rng(seed)
    N, D, W, H, V, T = 3, 4, 5, 6, 7, 5
    shapes = {"W_proj": (D, H), "b_proj": (H,), "W_embed": (V, W), "Wx": (W, H), "Wh": (H, H), "b": (H,),
              "W_vocab": (H, V), "b_vocab": (V,)}
    params = {k: 0.5 * rng.normal(size=s) for k, s in shapes.items()}
    captions = rng.integers(1, V, size=(N, T))
    captions[0, 3:] = 0  # padding after the words: masked out
    captions[2, 2] = 4  # `null=4` below masks this word too
    return params, rng.normal(size=(N, D)), captions


@pytest.mark.parametrize("null", [0, 4])
def test_loss_equals_numpy_float64_with_padding_masked(null):
    params, features, captions = small_problem()
    with jax.enable_x64():
        loss = rnn_captioning_loss(jax.tree.map(jnp.asarray, params), jnp.asarray(features), jnp.asarray(captions),
                                   null=null)
    np.testing.assert_allclose(float(loss), numpy_rnn_captioning_loss(params, features, captions, null), rtol=1e-12)


def test_gradient_equals_finite_differences():
    params, features, captions = small_problem(seed=1)
    assert_grad_close(lambda p: rnn_captioning_loss(p[0], p[1], jnp.asarray(captions)), (params, features), tol=1e-6)


def test_unknown_cell_is_a_user_error():
    params, features, captions = small_problem()
    with pytest.raises(UserError, match="cell='rnn' or cell='lstm'"):
        rnn_captioning_loss(params, features, captions, cell="gru")
