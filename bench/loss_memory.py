"""Memory of the sharded NT-Xent loss vs the unsharded one, from XLA's analysis of the compiled code.

    python -m bench.loss_memory            # global batch 4096, dim 128, 8 fake CPU devices

Compiles value-and-gradient of `visionax.losses.nt_xent` twice (nothing is run): sharded over 8
devices with `axis_name` (each device holds its 2·512 rows of the similarity matrix against all
2·4096 embeddings) and on one device (the whole [8192, 8192] matrix). Prints, per device, the largest
array in the optimized HLO and XLA's temporary-buffer total (`memory_analysis().temp_size_in_bytes`).
"""

from __future__ import annotations

import argparse
import os
import re

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  (after XLA_FLAGS)
import jax.numpy as jnp  # noqa: E402
from jax.sharding import PartitionSpec  # noqa: E402

from visionax.losses import nt_xent  # noqa: E402
from visionax.parallel import DATA_AXIS, make_mesh  # noqa: E402

_BYTES = {"f64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2, "pred": 1, "s8": 1, "u8": 1}
_ARRAY = re.compile(r"\b(f64|f32|s32|u32|bf16|f16|pred|s8|u8)\[([0-9,]+)\]")


def largest_array(compiled) -> tuple[int, str]:
    """Bytes and text of the largest array shape in the compiled (per-device) HLO, a float one on ties."""
    best = (0, False, "")
    for dtype, dims in _ARRAY.findall(compiled.as_text()):
        size = _BYTES[dtype]
        for dim in dims.split(","):
            size *= int(dim)
        best = max(best, (size, dtype.startswith(("f", "bf")), f"{dtype}[{dims}]"))
    return best[0], best[2]


def compile_losses(global_batch: int, dim: int, devices: int, temperature: float = 0.1):
    """The compiled sharded and unsharded value-and-gradient functions."""
    embeddings = jax.ShapeDtypeStruct((global_batch, dim), jnp.float32)
    value_and_grad = jax.value_and_grad(nt_xent, argnums=(0, 1))

    def per_device(z1, z2):
        return value_and_grad(z1, z2, temperature, DATA_AXIS)

    sharded = jax.jit(jax.shard_map(
        per_device, mesh=make_mesh(jax.devices()[:devices]),
        in_specs=(PartitionSpec(DATA_AXIS), PartitionSpec(DATA_AXIS)),
        out_specs=(PartitionSpec(), (PartitionSpec(DATA_AXIS), PartitionSpec(DATA_AXIS))),
        check_vma=False))
    unsharded = jax.jit(lambda z1, z2: value_and_grad(z1, z2, temperature))
    return (sharded.lower(embeddings, embeddings).compile(),
            unsharded.lower(embeddings, embeddings).compile())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--global_batch", type=int, default=4096)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    sharded, unsharded = compile_losses(args.global_batch, args.dim, args.devices)
    print(f"nt_xent value+grad, global batch {args.global_batch}, dim {args.dim}, "
          f"{args.devices} devices ({jax.devices()[0].platform})")
    print(f"{'':24}{'largest array':>28}{'MiB':>10}{'temp MiB':>12}")
    rows = [("sharded, per device", sharded), ("unsharded, one device", unsharded)]
    for name, compiled in rows:
        size, shape = largest_array(compiled)
        temp = compiled.memory_analysis().temp_size_in_bytes
        print(f"{name:24}{shape:>28}{size / 2**20:>10.1f}{temp / 2**20:>12.1f}")
    ratio = largest_array(unsharded)[0] / largest_array(sharded)[0]
    print(f"largest buffer: unsharded / sharded per device = {ratio:.1f}x")


if __name__ == "__main__":
    main()
