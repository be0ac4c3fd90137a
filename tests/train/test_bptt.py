"""Truncated BPTT: the chunked forward pass equals the unchunked one, a chunk's loss has exactly zero
gradient with respect to earlier chunks, and a resumed run keeps the carried state and position."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from visionax.errors import UserError
from visionax.layers.cells import LSTMCell
from visionax.train import bptt, checkpoint

B, T, K, D, H, V = 2, 12, 4, 3, 5, 7


def lstm():
    return nn.RNN(LSTMCell(features=H))


def lstm_params(x):
    return lstm().init(jax.random.key(0), x)["params"]


def zero_carry():
    return (jnp.zeros((B, H)), jnp.zeros((B, H)))


def test_chunked_forward_equals_the_unchunked_run():
    x = jax.random.normal(jax.random.key(1), (B, T, D))
    params = lstm_params(x)

    def apply_chunk(carry, chunk):
        return lstm().apply({"params": params}, chunk, initial_carry=carry, return_carry=True)

    carry, hidden = jax.jit(lambda x: bptt.run_chunks(apply_chunk, zero_carry(), x, K))(x)
    expected_carry, expected = lstm().apply({"params": params}, x, initial_carry=zero_carry(), return_carry=True)
    chex.assert_trees_all_close(hidden, expected, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(carry, expected_carry, rtol=1e-6, atol=1e-6)


def test_a_chunks_loss_has_zero_gradient_on_earlier_chunks_only():
    x = jax.random.normal(jax.random.key(2), (B, T, D))
    params = lstm_params(x)

    def apply_chunk(carry, chunk):
        return lstm().apply({"params": params}, chunk, initial_carry=carry, return_carry=True)

    def last_chunk_loss(x):
        _, hidden = bptt.run_chunks(apply_chunk, zero_carry(), x, K)
        return jnp.sum(hidden[:, -K:] ** 2)

    gradient = np.asarray(jax.grad(last_chunk_loss)(x))
    np.testing.assert_array_equal(gradient[:, : T - K], 0.0)  # exactly zero, not small
    assert np.all(np.abs(gradient[:, T - K:]).sum(axis=-1) > 0)
    # Without the truncation, the same loss reaches back to the first step.
    full = jax.grad(lambda x: jnp.sum(lstm().apply({"params": params}, x)[:, -K:] ** 2))(x)
    assert np.abs(np.asarray(full)[:, 0]).sum() > 0
    np.testing.assert_allclose(gradient[:, T - K:], np.asarray(full)[:, T - K:], rtol=1e-5, atol=1e-7)


class CharModel(nn.Module):
    """Embedding, an LSTM and a linear read-out over V characters."""

    @nn.compact
    def __call__(self, carry, ids):
        carry, hidden = nn.RNN(LSTMCell(features=H))(nn.Embed(V, D)(ids), initial_carry=carry, return_carry=True)
        return carry, nn.Dense(V)(hidden)


def chunk_loss(params, carry, inputs, targets):
    carry, logits = CharModel().apply({"params": params}, carry, inputs)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean(), carry


def initial_state():
    params = CharModel().init(jax.random.key(3), zero_carry(), jnp.zeros((B, K), jnp.int32))["params"]
    tx = optax.adam(0.05)
    return bptt.BPTTState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={}, opt_state=tx.init(params),
                          rng=jax.random.key(4), apply_fn=CharModel().apply, tx=tx, carry=zero_carry(),
                          position=jnp.zeros((), jnp.int32))


def text_streams():
    ids = jnp.asarray(np.random.default_rng(5).integers(0, V, size=2 * (3 * K + 1) + 1))
    return bptt.streams(ids, B)  # [2, 13]: chunks at 0, 4, 8, then back to 0


def test_streams_are_contiguous_and_chunks_shift_by_one():
    ids = jnp.arange(23)
    text = bptt.streams(ids, 2)
    np.testing.assert_array_equal(text, [np.arange(11), np.arange(11, 22)])
    inputs, targets = bptt.chunk_at(text, jnp.asarray(4), 3)
    np.testing.assert_array_equal(inputs, [[4, 5, 6], [15, 16, 17]])
    np.testing.assert_array_equal(targets, [[5, 6, 7], [16, 17, 18]])
    with pytest.raises(UserError, match="smaller --config.batch_size"):
        bptt.streams(jnp.arange(3), 2)


def test_step_carries_the_state_and_wraps_at_the_end_of_the_text():
    step = jax.jit(bptt.truncated_bptt_step(chunk_loss, K))
    state, text = initial_state(), text_streams()
    positions, carries = [], []
    for _ in range(4):
        state, metrics = step(state, text)
        positions.append(int(metrics["position"]))
        carries.append(state.carry)
    assert positions == [0, 4, 8, 0]
    assert int(state.position) == 4 and int(state.step) == 4
    assert np.abs(np.asarray(carries[1][1])).sum() > 0  # the hidden state after chunk 2 is carried
    chex.assert_trees_all_equal(carries[2], jax.tree.map(jnp.zeros_like, carries[2]))  # reset at the wrap
    # The step's gradient is the chunk's gradient with the carried state as a constant.
    fresh, _ = step(initial_state(), text)
    second, _ = step(fresh, text)
    inputs, targets = bptt.chunk_at(text, jnp.asarray(4), K)
    grads = jax.grad(lambda p: chunk_loss(p, fresh.carry, inputs, targets)[0])(fresh.params)
    expected = fresh.apply_gradients(grads)
    chex.assert_trees_all_close(second.params, expected.params, rtol=1e-5, atol=1e-7)


def test_resume_from_a_checkpoint_keeps_the_carried_state_and_the_position(tmp_path):
    step = jax.jit(bptt.truncated_bptt_step(chunk_loss, K))
    text = text_streams()
    straight = initial_state()
    for _ in range(3):
        straight, _ = step(straight, text)

    interrupted = initial_state()
    for _ in range(2):
        interrupted, _ = step(interrupted, text)
    checkpoints = checkpoint.manager(tmp_path, keep=1, every=1)
    checkpoint.save(checkpoints, interrupted, force=True)
    checkpoint.wait(checkpoints)
    resumed = checkpoint.restore_latest(checkpoint.manager(tmp_path, keep=1, every=1), initial_state())
    assert int(resumed.position) == 2 * K and int(resumed.step) == 2
    chex.assert_trees_all_equal(resumed.carry, interrupted.carry)
    resumed, _ = step(resumed, text)
    chex.assert_trees_all_equal(resumed.params, straight.params)
    # The carried state matters: restarting chunk 3 from a zero state ends elsewhere.
    zeroed, _ = step(interrupted.replace(carry=zero_carry()), text)
    assert not np.allclose(np.asarray(zeroed.params["Dense_0"]["kernel"]), np.asarray(straight.params["Dense_0"]["kernel"]))


def test_chunk_length_must_divide_the_sequence_and_fit_the_streams():
    with pytest.raises(UserError, match="does not split into chunks of 5"):
        bptt.run_chunks(lambda carry, chunk: (carry, chunk), None, jnp.zeros((B, T, D)), 5)
    with pytest.raises(UserError, match="shorter than one chunk"):
        bptt.truncated_bptt_step(chunk_loss, 20)(initial_state(), text_streams())
