"""One process of the multi-host test (tests/train/test_multihost.py): `processes` processes on
localhost, 4 fake CPU devices each (or one process with 8), train a small CNN through the training
loop, map the predictions over a test set, and save what the test compares.

    python tests/train/multihost_worker.py <process_id> <processes> <port> <workdir> <steps> <out.npz>
"""

import os
import sys

process_id, processes, port, workdir, steps, out = sys.argv[1:7]
process_id, processes, steps = int(process_id), int(processes), int(steps)
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={8 // processes}"
os.environ["JAX_PLATFORMS"] = "cpu"

import functools  # noqa: E402

import jax  # noqa: E402

if processes > 1:
    jax.distributed.initialize(f"localhost:{port}", num_processes=processes, process_id=process_id)

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from visionax import evaluate, parallel  # noqa: E402
from visionax.data.pipeline import ArraySource, Batches  # noqa: E402
from visionax.models.small_cnn import SmallCNN  # noqa: E402
from visionax.train import checkpoint, loop, supervised  # noqa: E402
from visionax.train.state import create_train_state  # noqa: E402


class RecordingSource(ArraySource):
    """An array source that remembers which records this process read."""

    def __getitem__(self, index):
        READ.append(index)
        return super().__getitem__(index)


READ: list[int] = []
generator = np.random.default_rng(0)
images = generator.integers(0, 256, (96, 8, 8, 1), dtype=np.uint8)
labels = (images.reshape(96, -1).mean(1) > 127).astype(np.int32)
source = RecordingSource(images[:64], labels[:64])
batches = Batches(source, 16, seed=0)
data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
model = SmallCNN(num_classes=2, widths=(4, 8, 8), bn_axis_name=parallel.DATA_AXIS)
state = create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1, momentum=0.9), (8, 8, 1))
config = ml_collections.ConfigDict({"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2, "eval_every": 0})
step = functools.partial(supervised.train_step, settings=supervised.SupervisedSettings(num_classes=2))
state = loop.fit(config, workdir, state=state, per_device_step=step, batches=batches,
                 data_parallel=data_parallel, num_steps=steps)
predict = functools.partial(supervised.predict, apply_fn=model.apply)
logits = evaluate.map_over_batches(data_parallel, predict, state.variables, images[64:], 16)
saved, saved_step = checkpoint.load_variables(workdir)
np.savez(out, read=np.asarray(READ), logits=logits, checkpoint_step=saved_step, devices=jax.device_count(),
         **{f"param_{index}": np.asarray(leaf) for index, leaf in enumerate(jax.tree.leaves(state.params))},
         **{f"saved_{index}": np.asarray(leaf) for index, leaf in enumerate(jax.tree.leaves(saved["params"]))})
