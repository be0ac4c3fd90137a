"""Input-pipeline benchmark: images/s the pipeline alone delivers to the devices, beside what the SimCLR
training step consumes on the same backend, in one run.

    python -m bench.pipeline                                           # the embedded digits
    python -m bench.pipeline --folder ../shared/data/cifar10-jpeg      # and the CIFAR-10 image folder
    python -m bench.pipeline --batches 256 --seconds 1 --step-steps 1  # quick

For each dataset, loading mode and batch size: `Batches.host_batch(step)` then `DataParallel.put_batch`
for consecutive steps, timed for at least `--seconds` (after one untimed batch). Modes: `records`
(`config.data.in_memory_mb=0`: the TFDS data source read record by record), `memory` (the split held
in memory as arrays, batches gathered by index: the default for splits below 4,000 MB), `device`
(`config.data.on_device=True`: the split placed on the devices once, a compiled step that only gathers
its batch, `visionax.train.feed.DeviceFeed`) and, for the folder, `streamed` (`config.data.encoded=True`:
the JPEG bytes stored, decoded and resized by `--workers` grain processes, `StreamedBatches`). Every mode
feeds a step that only checksums its batch. The step's rate
is `experiments.simclr`'s step (its digits config, or `simclr_cifar10.py:cpu30` for the folder) timed by
`experiments.representations.seconds_per_step`; the ratio pipeline/step says who bounds training (above
1: the step does).
"""

from __future__ import annotations

import argparse
import time

import flax
import jax
import jax.numpy as jnp
import ml_collections

from experiments import simclr
from experiments.configs import simclr as simclr_config
from experiments.configs import simclr_cifar10
from experiments.representations import seconds_per_step
from visionax import parallel
from visionax.train import feed, setup

# each mode's changes to the data config (from the defaults: in memory, fed from the host, raw pixels)
MODES = {"records": {"in_memory_mb": 0.0}, "memory": {}, "device": {"on_device": True}, "streamed": {"encoded": True}}


@flax.struct.dataclass
class StepCount:
    step: jax.Array


def gather_only(state: StepCount, batch: dict) -> tuple[StepCount, dict]:
    """A per-device step that only takes its batch (its checksum, so that nothing is left out)."""
    checksum = jax.lax.psum(jnp.sum(batch["image"], dtype=jnp.int32), parallel.DATA_AXIS)
    return StepCount(state.step + 1), {"checksum": checksum}


def pipeline_rate(config, seconds: float) -> float:
    """Images/s that `config`'s feed delivers over consecutive steps of its training batches: the
    host's batches placed on the devices, or (`data.on_device`) the batches the devices gather."""
    run = setup.setup(config)
    fed_step = feed.feed(config, run.batches, run.data_parallel).step(gather_only)
    state, _ = fed_step(run.data_parallel.put_state(StepCount(jnp.zeros((), jnp.int32))), 0)
    jax.block_until_ready(state)
    start, step = time.perf_counter(), 1
    while time.perf_counter() - start < seconds or step < 3:
        state, _ = fed_step(state, step)
        jax.block_until_ready(state)
        step += 1
    rate = (step - 1) * config.batch_size / (time.perf_counter() - start)
    run.batches.close()
    return rate


def dataset_configs(folder: str):
    """(name, SimCLR config) of each dataset benchmarked."""
    yield "digits", simclr_config.get_config()
    if folder:
        config = simclr_cifar10.get_config("cpu30")
        config.data.folder = folder
        yield "CIFAR-10 folder", config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default="", help="an image folder <dir>/{train,test}/<class>/<image>")
    parser.add_argument("--batches", default="256,1024", help="global batch sizes, comma-separated")
    parser.add_argument("--seconds", type=float, default=3.0, help="time each pipeline for at least this long")
    parser.add_argument("--step-steps", type=int, default=2, help="SimCLR steps timed after the compiling one")
    parser.add_argument("--workers", type=int, default=2, help="grain worker processes of the streamed mode")
    args = parser.parse_args()
    batch_sizes = [int(size) for size in args.batches.split(",")]
    print(f"backend {jax.default_backend()}, {jax.device_count()} device(s)")
    print(f"{'dataset':<16} {'batch':>6} {'step images/s':>14} " +
          " ".join(f"{mode + ' images/s':>18} {'ratio':>7}" for mode in MODES))
    for name, config in dataset_configs(args.folder):
        for batch_size in batch_sizes:
            config.batch_size = batch_size
            step_seconds, _ = seconds_per_step(simclr, config, args.step_steps)
            step_rate = batch_size / step_seconds
            cells = []
            for mode, changes in MODES.items():
                if mode == "streamed" and config.data.name != "image_folder":
                    cells.append(f"{'—':>18} {'—':>7}")  # only an image folder is stored encoded
                    continue
                mode_config = ml_collections.ConfigDict(config.to_dict())
                mode_config.data.update({"workers": args.workers, **changes})
                rate = pipeline_rate(mode_config, args.seconds)
                cells.append(f"{rate:>18,.0f} {rate / step_rate:>7.1f}")
            print(f"{name:<16} {batch_size:>6} {step_rate:>14,.0f} " + " ".join(cells), flush=True)


if __name__ == "__main__":
    main()
