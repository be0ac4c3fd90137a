"""One process of the multi-host test (tests/train/test_multihost.py): `processes` processes on
localhost, 4 fake CPU devices each, train a small CNN through the training loop to each of the
comma-separated `steps` in turn (each `train` after the first starts afresh and restores the
checkpoint the previous one left; `device<steps>`: a fresh run in `<workdir>_device` fed on the
devices), map the predictions over a test set, and save what the test compares,
`<out>.<steps>.npz` for each. Imported, `train` is the one-process reference on the 8
devices of the test process.

    python tests/train/multihost_worker.py <process_id> <processes> <port> <workdir> <steps,...> <out>
"""

import os
import sys

if __name__ == "__main__":
    process_id, processes, port = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    inherited = [flag for flag in os.environ.get("XLA_FLAGS", "").split()  # the suite's compile flags
                 if not flag.startswith("--xla_force_host_platform_device_count")]
    os.environ["XLA_FLAGS"] = " ".join([*inherited, f"--xla_force_host_platform_device_count={8 // processes}"])
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    if processes > 1:
        jax.distributed.initialize(f"localhost:{port}", num_processes=processes, process_id=process_id)

import dataclasses
import functools

import jax
import ml_collections
import numpy as np
import optax

from visionax import evaluate, parallel
from visionax.data.pipeline import ArraySource, Batches
from visionax.models.small_cnn import SmallCNN
from visionax.train import checkpoint, loop, supervised
from visionax.train.state import create_train_state


@dataclasses.dataclass(frozen=True)
class RecordingSource:
    """Arrays read record by record (not an `ArraySource`, which batches gather without reading records),
    remembering which records this process read."""

    images: np.ndarray
    labels: np.ndarray
    read: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.read.append(index)
        return {"image": self.images[index], "label": self.labels[index]}


def train(workdir: str, steps: int, on_device: bool = False) -> dict[str, np.ndarray]:
    """Train to `steps` (resuming from `workdir`'s checkpoint), predict the test set, reload the
    checkpoint: the records this process read, the logits, the parameters trained and saved.
    `on_device`: the split placed on the devices and every batch gathered there (`data.on_device`)."""
    generator = np.random.default_rng(0)
    images = generator.integers(0, 256, (96, 8, 8, 1), dtype=np.uint8)
    labels = (images.reshape(96, -1).mean(1) > 127).astype(np.int32)
    source = RecordingSource(images[:64], labels[:64])
    batches = Batches(ArraySource(source.images, source.labels) if on_device else source, 16, seed=0)
    data_parallel = parallel.DataParallel(parallel.make_mesh(), "shard_map")
    model = SmallCNN(num_classes=2, widths=(4, 8, 8), bn_axis_name=parallel.DATA_AXIS)
    state = create_train_state(jax.random.PRNGKey(0), model, optax.sgd(0.1, momentum=0.9), (8, 8, 1))
    config = ml_collections.ConfigDict({"log_every": 1, "checkpoint_every": 2, "keep_checkpoints": 2, "eval_every": 0,
                                        "data": {"on_device": on_device}})
    step = functools.partial(supervised.train_step, settings=supervised.SupervisedSettings(num_classes=2))
    state = loop.fit(config, workdir, state=state, per_device_step=step, batches=batches,
                     data_parallel=data_parallel, num_steps=steps)
    predict = functools.partial(supervised.predict, apply_fn=model.apply)
    logits = evaluate.map_over_batches(data_parallel, predict, state.variables, images[64:], 16)
    saved, saved_step = checkpoint.load_variables(workdir)
    return dict(read=np.asarray(source.read), logits=logits, checkpoint_step=saved_step, devices=jax.device_count(),
                **{f"param_{index}": np.asarray(leaf) for index, leaf in enumerate(jax.tree.leaves(state.params))},
                **{f"saved_{index}": np.asarray(leaf) for index, leaf in enumerate(jax.tree.leaves(saved["params"]))})


if __name__ == "__main__":
    for run in sys.argv[5].split(","):  # "<steps>": host-fed in <workdir>; "device<steps>": fed on the devices
        on_device = run.startswith("device")
        np.savez(f"{sys.argv[6]}.{run}.npz", **train(sys.argv[4] + "_device" * on_device,
                                                     int(run.removeprefix("device")), on_device))
