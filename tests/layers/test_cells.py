"""The Flax cells against Flax's own cells with the weights mapped across (non-zero biases on every
side), against the barebone functions, and their initialisation per gate."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from visionax.layers import cells, recurrent

N, T, D, H = 3, 5, 4, 6
FLAX_CELLS = {"SimpleRNNCell": nn.SimpleCell, "LSTMCell": nn.LSTMCell, "GRUCell": nn.GRUCell}


def random_params(cell_name, seed=0):
    """A visionax cell's parameters, every leaf (biases included) drawn from N(0, 0.5²)."""
    cell = getattr(cells, cell_name)(features=H)
    params = cell.init(jax.random.key(seed), cell.initialize_carry(jax.random.key(0), (N, D)), jnp.ones((N, D)))["params"]
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, leaf.shape, leaf.dtype) for k, leaf in zip(keys, leaves)])


def random_carry(cell_name, seed=2):
    first, second = jax.random.normal(jax.random.key(seed), (2, N, H))
    return (first, second) if cell_name == "LSTMCell" else first


def inputs(seed=3):
    return jax.random.normal(jax.random.key(seed), (N, T, D))


@pytest.mark.parametrize("cell_name", FLAX_CELLS)
def test_equal_to_flax_cell_inside_nn_rnn_with_mapped_weights(cell_name):
    params, carry, x = random_params(cell_name), random_carry(cell_name), inputs()
    ours = nn.RNN(getattr(cells, cell_name)(features=H))
    theirs = nn.RNN(FLAX_CELLS[cell_name](features=H))
    flax_params = {"cell": cells.to_flax_params(cell_name, params)}
    # The mapped tree has exactly the structure Flax's cell creates.
    chex.assert_trees_all_equal_shapes(flax_params, theirs.init(jax.random.key(0), x, initial_carry=carry)["params"])
    expected_carry, expected = theirs.apply({"params": flax_params}, x, initial_carry=carry, return_carry=True)
    final_carry, hidden = jax.jit(lambda p, c, x: ours.apply({"params": p}, x, initial_carry=c, return_carry=True))(
        {"cell": params}, carry, x)
    chex.assert_trees_all_close(hidden, expected, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(final_carry, expected_carry, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell_name", FLAX_CELLS)
def test_flax_trained_weights_load_through_from_flax_params(cell_name):
    theirs = nn.RNN(FLAX_CELLS[cell_name](features=H))
    x, carry = inputs(seed=4), random_carry(cell_name, seed=5)
    flax_params = theirs.init(jax.random.key(6), x, initial_carry=carry)["params"]
    flax_params = jax.tree.map(lambda leaf: leaf + 0.3, flax_params)  # non-zero biases
    ours = nn.RNN(getattr(cells, cell_name)(features=H))
    converted = {"cell": cells.from_flax_params(cell_name, flax_params["cell"])}
    chex.assert_trees_all_close(ours.apply({"params": converted}, x, initial_carry=carry),
                                theirs.apply({"params": flax_params}, x, initial_carry=carry), rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(cells.to_flax_params(cell_name, converted["cell"]), flax_params["cell"], rtol=1e-6)


@pytest.mark.parametrize("cell_name", FLAX_CELLS)
def test_cell_equals_the_barebone_sequence_in_float64(cell_name):
    with jax.enable_x64():
        params = jax.tree.map(lambda leaf: jnp.asarray(leaf, jnp.float64), random_params(cell_name, seed=7))
        x = jnp.asarray(inputs(seed=8), jnp.float64)
        h0 = jnp.asarray(random_carry("SimpleRNNCell", seed=9), jnp.float64)
        carry = (jnp.zeros_like(h0), h0) if cell_name == "LSTMCell" else h0
        cell = getattr(cells, cell_name)(features=H, param_dtype=jnp.float64)
        hidden = nn.RNN(cell).apply({"params": {"cell": params}}, x, initial_carry=carry)
        barebone = {"SimpleRNNCell": recurrent.rnn, "LSTMCell": recurrent.lstm, "GRUCell": recurrent.gru}[cell_name]
        names = ["Wx", "Wh", "bx", "bh"] if cell_name == "GRUCell" else ["Wx", "Wh", "b"]
        expected = barebone(x, h0, *(params[name] for name in names))
        assert hidden.dtype == jnp.float64
    np.testing.assert_allclose(hidden, expected, rtol=1e-12, atol=1e-12)


def test_lstm_carry_is_cell_then_hidden_as_in_flax():
    params, (c, h) = random_params("LSTMCell", seed=10), random_carry("LSTMCell", seed=11)
    x = inputs(seed=12)[:, 0]
    (c_next, h_next), output = cells.LSTMCell(features=H).apply({"params": params}, (c, h), x)
    expected_h, expected_c = recurrent.lstm_step(x, h, c, params["Wx"], params["Wh"], params["b"])
    np.testing.assert_allclose(c_next, expected_c, rtol=1e-6)
    np.testing.assert_allclose(h_next, expected_h, rtol=1e-6)
    np.testing.assert_array_equal(output, h_next)


@pytest.mark.parametrize("cell_name, gates", [("SimpleRNNCell", 1), ("LSTMCell", 4), ("GRUCell", 3)])
def test_recurrent_kernel_is_orthogonal_per_gate_and_biases_start_at_zero(cell_name, gates):
    cell = getattr(cells, cell_name)(features=H)
    carry = cell.initialize_carry(jax.random.key(0), (N, D))
    params = cell.init(jax.random.key(1), carry, jnp.ones((N, D)))["params"]
    chex.assert_shape([params["Wx"], params["Wh"]], [(D, gates * H), (H, gates * H)])
    blocks = np.split(np.asarray(params["Wh"]), gates, axis=1)
    for block in blocks:
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    if gates > 1:
        assert not np.allclose(blocks[0], blocks[1])
    for name in set(params) - {"Wx", "Wh"}:
        np.testing.assert_array_equal(params[name], 0.0)
    chex.assert_trees_all_equal(carry, jax.tree.map(jnp.zeros_like, carry))
    chex.assert_shape(jax.tree.leaves(carry), (N, H))


@pytest.mark.parametrize("cell_name", FLAX_CELLS)
def test_bfloat16_computation_keeps_float32_parameters_and_carry(cell_name):
    params, carry, x = random_params(cell_name, seed=13), random_carry(cell_name), inputs()
    full = nn.RNN(getattr(cells, cell_name)(features=H)).apply({"params": {"cell": params}}, x, initial_carry=carry)
    final_carry, half = nn.RNN(getattr(cells, cell_name)(features=H, dtype=jnp.bfloat16)).apply(
        {"params": {"cell": params}}, x, initial_carry=carry, return_carry=True)
    assert half.dtype == jnp.bfloat16
    assert all(state.dtype == jnp.float32 for state in jax.tree.leaves(final_carry))
    np.testing.assert_allclose(np.asarray(half, np.float32), full, atol=0.05)
