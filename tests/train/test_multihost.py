"""Multi-host on one machine: two processes on localhost (jax.distributed, CPU collectives, 4 fake
devices each) train through the loop and end with the parameters of one process with 8 devices;
each reads only its share of every batch (and none with the split placed on the devices, which
trains to the same parameters); both restore the checkpoint both wrote; the evaluation
that maps over a test set gives every process the whole result. The one-process reference runs in
the test process (its 8 devices), the same code as the workers; the resumed training runs in the
same two worker processes, from a fresh state that restores the checkpoint from disk (restarting a
killed process is tests/train/test_loop.py's kill -9 test)."""

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests.train import multihost_worker
from visionax.data.pipeline import ArraySource, Batches

WORKER = pathlib.Path(__file__).with_name("multihost_worker.py")
ROOT = pathlib.Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.multihost, pytest.mark.long]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def launch(processes: int, workdir: pathlib.Path, steps: tuple[int | str, ...]) -> list[list[dict]]:
    """`processes` workers training in `workdir` to each of `steps` in turn (`f"device{n}"`: a fresh
    run fed on the devices): their results, `[step][process]`."""
    port = free_port()
    # No persistent compilation cache in the workers: with jax 0.12.1 a process that loads the
    # executable the other process wrote hangs at its first collective (the resumed run deadlocked).
    environment = {name: value for name, value in os.environ.items() if name != "JAX_COMPILATION_CACHE_DIR"}
    outputs = [workdir.parent / f"process_{index}" for index in range(processes)]
    running = [subprocess.Popen([sys.executable, str(WORKER), str(index), str(processes), str(port), str(workdir),
                                 ",".join(map(str, steps)), str(output)], cwd=ROOT, env=environment, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
               for index, output in enumerate(outputs)]
    for process in running:
        log, _ = process.communicate(timeout=300)
        assert process.returncode == 0, log[-3000:]
    return [[dict(np.load(f"{output}.{step}.npz")) for output in outputs] for step in steps]


def params(result: dict, prefix: str = "param_") -> list[np.ndarray]:
    return [result[key] for key in sorted((k for k in result if k.startswith(prefix)), key=lambda k: int(k[len(prefix):]))]


def test_two_hosts_train_checkpoint_resume_and_evaluate_like_one(tmp_path):
    single = multihost_worker.train(str(tmp_path / "single"), 6)
    # checkpoints at steps 2 and 4, written by both; then both start afresh, restore step 4 and go on to 6;
    # then a fresh run to 6 with the split placed on the devices (data.on_device)
    first, resumed, fed_on_device = launch(2, tmp_path / "hosts", (4, 6, "device6"))
    assert int(single["devices"]) == 8 and all(int(result["devices"]) == 8 for result in first)
    batches = Batches(ArraySource(np.zeros((64, 1)), np.zeros(64)), 16, seed=0)
    for host, result in enumerate(first):  # each host read its own half of every global batch, only
        expected = np.concatenate([batches.indices(step)[8 * host: 8 * host + 8] for step in range(4)])
        np.testing.assert_array_equal(np.sort(result["read"]), np.sort(expected))
    for host, result in enumerate(resumed):  # after the restore: only the batches of steps 4 and 5
        expected = np.concatenate([batches.indices(step)[8 * host: 8 * host + 8] for step in (4, 5)])
        np.testing.assert_array_equal(np.sort(result["read"]), np.sort(expected))
    for result in resumed:
        for ours, reference in zip(params(result), params(single)):
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
        for saved, reference in zip(params(result, "saved_"), params(single)):
            np.testing.assert_allclose(saved, reference, rtol=1e-5, atol=1e-6)
        assert int(result["checkpoint_step"]) == 6
        assert result["logits"].shape == (32, 2)
        np.testing.assert_allclose(result["logits"], single["logits"], rtol=1e-4, atol=1e-5)
    for result in fed_on_device:  # no record read on the host, the host-fed run's parameters
        assert len(result["read"]) == 0 and int(result["checkpoint_step"]) == 6
        for ours, reference in zip(params(result), params(single)):
            np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)
