"""What the pretext-task step tests share: two steps on 8 devices compared with the same two steps
on 1 device, in float64."""

import chex
import jax
import numpy as np


def assert_eight_devices_equal_one(history, state, one_device, accuracy_name: str) -> None:
    """`history` and `state` of 2 steps on 8 devices equal `one_device` = (history, state, initial
    state) of the same steps on 1 device: the loss and `accuracy_name` of each step, and the
    parameters, BatchNorm statistics and optimizer state after them, all moved from the start."""
    expected_history, expected_state, initial = one_device
    for metrics, expected in zip(history, expected_history):
        np.testing.assert_allclose(metrics["loss"], expected["loss"], rtol=1e-10)
        np.testing.assert_allclose(metrics[accuracy_name], expected[accuracy_name], rtol=1e-12)
    assert history[1]["loss"] != history[0]["loss"]
    assert jax.tree.leaves(state.params)[0].dtype == np.float64
    moved = jax.tree.map(lambda a, b: float(np.max(np.abs(a - b))), state.params, initial.params)
    assert min(jax.tree.leaves(moved)) > 0
    chex.assert_trees_all_close(state.params, expected_state.params, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(state.batch_stats, expected_state.batch_stats, rtol=1e-10, atol=1e-12)
    chex.assert_trees_all_close(state.opt_state, expected_state.opt_state, rtol=1e-10, atol=1e-12)
    assert int(state.step) == 2
