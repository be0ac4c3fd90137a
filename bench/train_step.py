"""Training-step benchmark: visionax against the same step in PyTorch, side by side in one run.

    python -m bench.train_step                                  # both steps, batch 128, CPU
    python -m bench.train_step --which supervised --impls auto,xla --steps 3
    python -m bench.train_step --which simclr --batch 512 --dtype bfloat16 --no-torch   # GPU

(a) SimCLR: ResNet-18 (CIFAR stem) + projection head (512 → 512 → 128, BN), both views of
    `--batch` pairs in one forward pass, NT-Xent (τ = 0.2), LARS. Timed twice on the visionax
    side: the step exactly as `experiments.simclr` runs it (`visionax.ssl.simclr.train_step`
    through `DataParallel`, views made on the device) and the same step on ready-made views, which
    is what the PyTorch twin (bench/torch_reference.py) does and what the ratio compares.
(b) Supervised: ResNet-18 (CIFAR stem, 10 classes), softmax cross-entropy, SGD momentum 0.9 with
    weight decay 5e-4 (`visionax.train.supervised.train_step` through `DataParallel`).

Each visionax step is compiled ahead of time (lowering and compilation are timed: the compile time
of the SimCLR step is one of the issue's figures), run once to warm up, then `--steps` rounds
time every contestant once per round, interleaved, so that a slow phase of a shared machine hits
all of them; in each round a contestant runs one untimed step right before its timed one.
Reported: best and mean step time, images/s (SimCLR: views/s = 2 × pairs/s), the ratio to
PyTorch, and model FLOP/s = 6 × forward MACs × images/s (forward 2·MACs, backward 4·MACs;
convolutions and matmuls only) as a fraction of the `jnp.dot` peak measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import matmul_peak
from visionax import optim
from visionax.losses.penalties import decay_mask
from visionax.models.costs import jaxpr_macs
from visionax.data.augment import ViewSettings
from visionax.models import get_model
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh
from visionax.ssl import simclr
from visionax.ssl.heads import ContrastiveModel
from visionax.train import supervised
from visionax.train.state import TrainState, create_train_state

SETTINGS = simclr.SimCLRSettings(temperature=0.2, head_hidden_dim=512, projection_dim=128)
IMAGE = (32, 32, 3)


def forward_macs_per_image(model, variables) -> int:
    """Convolution and matmul MACs of one image's forward pass (traced with XLA convolutions)."""
    closed = jax.make_jaxpr(lambda v, x: model.apply(v, x, train=False))(
        variables, jax.ShapeDtypeStruct((1, *IMAGE), jnp.float32))
    return jaxpr_macs(closed.jaxpr)


def simclr_model(conv_impl: str, dtype) -> ContrastiveModel:
    encoder = get_model("resnet18", num_classes=None, cifar_stem=True, conv_impl=conv_impl,
                        dtype=dtype, bn_axis_name=DATA_AXIS)
    head = simclr.projection_head(SETTINGS, bn_axis_name=DATA_AXIS, dtype=dtype)
    return ContrastiveModel(encoder=encoder, head=head)


def views_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    """`simclr.train_step` on ready-made views (`batch["view1"]`, `batch["view2"]`)."""
    return simclr.train_step_on_views(state, batch["view1"], batch["view2"], temperature=SETTINGS.temperature)


class JaxRunner:
    """A compiled DataParallel step on one device, its state kept between calls."""

    def __init__(self, name, per_device_step, state, batch, data_parallel: DataParallel):
        self.name = name
        self.state = data_parallel.put_state(state)
        self.batch = data_parallel.put_batch(batch)
        jitted = data_parallel.step(per_device_step)
        t0 = time.perf_counter()
        lowered = jitted.lower(self.state, self.batch)
        t1 = time.perf_counter()
        self.compiled = lowered.compile()
        t2 = time.perf_counter()
        self.lower_s, self.compile_s = t1 - t0, t2 - t1
        self.memory = self.compiled.memory_analysis()

    def __call__(self):
        self.state, metrics = self.compiled(self.state, self.batch)
        return metrics["loss"]


def build_jax(which: str, impl: str, batch_size: int, dtype, data_parallel: DataParallel, rng,
              simclr_variants: str = "both"):
    """[(runner, images per step)] for `which` with conv_impl `impl`; and forward MACs per image."""
    images = rng.integers(0, 256, (batch_size, *IMAGE), dtype=np.uint8)
    key = jax.random.PRNGKey(0)
    if which == "supervised":
        model = get_model("resnet18", num_classes=10, cifar_stem=True, conv_impl=impl, dtype=dtype)
        tx = optax.chain(optax.masked(optim.add_decayed_weights(weight_decay=5e-4), decay_mask),
                         optim.momentum(0.1, beta=0.9))
        state = create_train_state(key, model, tx, IMAGE)
        batch = {"image": images, "label": rng.integers(0, 10, (batch_size,), dtype=np.int32)}
        step = functools.partial(supervised.train_step, settings=supervised.SupervisedSettings(num_classes=10))
        runner = JaxRunner(f"visionax {impl}", step, state, batch, data_parallel)
        macs = forward_macs_per_image(
            get_model("resnet18", num_classes=10, cifar_stem=True), state.variables)
        return [(runner, batch_size)], macs
    model = simclr_model(impl, dtype)
    tx = optim.lars(0.3, momentum=0.9, weight_decay=1e-6)
    state = create_train_state(key, model, tx, IMAGE)
    settings = ViewSettings(output_size=IMAGE[:2])
    runners = []
    if simclr_variants in ("ready", "both"):
        views = {"view1": rng.random((batch_size, *IMAGE), dtype=np.float32),
                 "view2": rng.random((batch_size, *IMAGE), dtype=np.float32)}
        runners.append((JaxRunner(f"visionax {impl} (ready views)", views_step, state, views,
                                  data_parallel), 2 * batch_size))
    if simclr_variants in ("full", "both"):
        runners.append((JaxRunner(f"visionax {impl} (views on device)",
                                  functools.partial(simclr.train_step, settings=SETTINGS,
                                                    view_settings=settings),
                                  state, {"image": images}, data_parallel), 2 * batch_size))
    macs = forward_macs_per_image(simclr_model("xla", jnp.float32), state.variables)
    return runners, macs


class TorchRunner:
    def __init__(self, which: str, batch_size: int, rng, channels_last: bool):
        import torch

        from bench import torch_reference as ref

        torch.manual_seed(0)
        layout = "channels_last" if channels_last else "NCHW"
        self.name = f"pytorch {torch.__version__} ({layout})"
        self.lower_s = self.compile_s = 0.0
        images = torch.from_numpy(rng.random((batch_size, 3, *IMAGE[:2]), dtype=np.float32))
        if which == "supervised":
            step = ref.SupervisedStep(channels_last=channels_last)
            labels = torch.from_numpy(rng.integers(0, 10, (batch_size,)))
            self._call = lambda: step(images, labels)
        else:
            step = ref.SimCLRStep(temperature=SETTINGS.temperature, channels_last=channels_last)
            other = torch.from_numpy(rng.random((batch_size, 3, *IMAGE[:2]), dtype=np.float32))
            self._call = lambda: step(images, other)

    def __call__(self):
        return self._call()


def block(value):
    return jax.block_until_ready(value) if isinstance(value, jax.Array) else float(value)


def run(which, args, peak, data_parallel, dtype):
    rng = np.random.default_rng(0)
    contestants, macs = [], None
    for impl in args.impls.split(","):
        built, macs = build_jax(which, impl, args.batch, dtype, data_parallel, rng,
                                args.simclr_variants)
        contestants += built
        for runner, _ in built:
            mem = runner.memory
            temp = f", temp {mem.temp_size_in_bytes / 2**20:.0f} MiB" if mem is not None else ""
            print(f"  compiled {runner.name}: lower {runner.lower_s:.1f} s, "
                  f"compile {runner.compile_s:.1f} s{temp}", flush=True)
    if not args.no_torch:
        import torch

        torch.set_num_threads(args.threads or os.cpu_count())
        for cl in (True, False) if args.torch_layouts == "both" else (args.torch_layouts == "cl",):
            contestants.append((TorchRunner(which, args.batch, rng, cl), 2 * args.batch
                                if which == "simclr" else args.batch))
    for runner, _ in contestants:  # warm-up (first PyTorch steps allocate, oneDNN picks kernels)
        for _ in range(args.warmup):
            block(runner())
    times = {runner.name: [] for runner, _ in contestants}
    for _ in range(args.steps):
        for runner, _ in contestants:
            # one untimed step first: the timed one then follows a step of its own program, as in
            # a training loop (right after another contestant, the first step re-faults the pages
            # the other freed: 20 % slower for the step that follows PyTorch's)
            block(runner())
            t = time.perf_counter()
            block(runner())
            times[runner.name].append(time.perf_counter() - t)
    flops_per_image = 6 * macs
    print(f"  model: {macs / 1e9:.3f} GMACs forward per image, training FLOPs/image "
          f"= 6·MACs = {flops_per_image / 1e9:.2f} GFLOP")
    torch_best = min((min(times[r.name]) for r, _ in contestants if r.name.startswith("pytorch")),
                     default=None)
    unit = "views/s" if which == "simclr" else "images/s"
    print(f"  {'contestant':44s} {'best s':>7s} {'mean s':>7s} {unit:>9s} {'vs torch':>8s} "
          f"{'GFLOP/s':>8s} {'of peak':>7s}")
    for runner, per_step in contestants:
        best, mean = min(times[runner.name]), statistics.fmean(times[runner.name])
        rate = per_step / best
        ratio = f"{torch_best / best:8.2f}" if torch_best else f"{'-':>8s}"
        flops = flops_per_image * rate
        print(f"  {runner.name:44s} {best:7.3f} {mean:7.3f} {rate:9.1f} {ratio} "
              f"{flops / 1e9:8.1f} {flops / peak:7.2f}")
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        print(f"  device memory: peak {stats['peak_bytes_in_use'] / 2**30:.2f} GiB in use "
              f"(of {stats.get('bytes_limit', 0) / 2**30:.0f} GiB)")
    return times


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--which", default="supervised,simclr")
    ap.add_argument("--batch", type=int, default=128, help="images (supervised) or pairs (SimCLR)")
    ap.add_argument("--steps", type=int, default=3, help="timed rounds")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--impls", default="auto", help="conv_impl values to time, comma-separated")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--simclr-variants", default="both", choices=("ready", "full", "both"),
                    help="SimCLR steps to time: on ready views, with views made on the device")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--torch-layouts", default="cl", choices=("cl", "nchw", "both"))
    ap.add_argument("--threads", type=int, default=0, help="PyTorch threads (default: all cores)")
    args = ap.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    device = jax.devices()[0]
    data_parallel = DataParallel(make_mesh([device]))
    peak = matmul_peak(8192 if device.platform == "gpu" else 2048, reps=10, dtype=dtype)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, device {device.device_kind} "
          f"({device.platform}), jax {jax.__version__}; {args.dtype} jnp.dot peak "
          f"{peak / 1e9:.0f} GFLOP/s; batch {args.batch}")
    for which in args.which.split(","):
        print(f"{which}:")
        run(which, args, peak, data_parallel, dtype)
    # visionax's oneDNN convolutions set OMP_WAIT_POLICY=PASSIVE (unless set) before PyTorch loads,
    # so both sides' OpenMP threads sleep between parallel regions
    print(f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")


if __name__ == "__main__":
    main()
