#!/usr/bin/env bash
# GPU benchmark of issue 7, one prepared script for a lent device machine (one H100 or H200, no
# network; JAX, flax, optax, chex and orbax preinstalled; Python 3.12 at /opt/torch/.venv).
#
# Prints, for the SimCLR ResNet-18 (CIFAR stem) training step exactly as experiments.simclr runs it
# (views made on the device, NT-Xent, LARS, conv_impl=auto = XLA's convolution on GPU), images/s
# (views/s) and model FLOP utilisation (6·MACs·images/s over a jnp.dot peak measured in the same
# run, same dtype) in bfloat16 and float32 at batch 512 and 1024 pairs, the device's peak memory,
# and the memory of the NT-Xent loss: compiled on the GPU (one device, the whole similarity matrix)
# and sharded 8 ways (8 fake CPU devices: what each device of an 8-GPU host would hold).
#
# Prepare (here, with network; of what the benchmark imports only dm-pix is missing there; the
# main jobs also need ml_collections, tensorboardX, importlib_resources and TFDS with its
# dependencies array-record, dm-tree, immutabledict, promise, simple-parsing, docstring-parser,
# tensorflow-metadata, googleapis-common-protos, termcolor and toml, each as a wheel in .whl):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux2014_x86_64 -d .whl dm-pix==0.4.4
# Run (device tool): command `bash bench/gpu.sh`, carry [".whl"], timeout_s 600 (took 3 min 50 s on
# an H100, figures in MEASUREMENTS.md).
# Everything printed is also written to $OUT/gpu.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/visionax-gpu}"
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"
PY="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1

if compgen -G ".whl/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"

log() { "$@" 2>&1 | tee -a "$LOG"; }

log nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
log "$PY" - <<'EOF'
import importlib
for name in ("jax", "jaxlib", "flax", "optax", "chex", "orbax.checkpoint", "dm_pix"):
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError as error:
        print(f"MISSING {name}: {error} (carry .whl, see the top of bench/gpu.sh)")
import jax
print("devices:", jax.devices())
EOF

BATCHES="${BATCHES:-512 1024}"  # BATCHES="8 16" STEPS=1 bash bench/gpu.sh: a quick smoke run on a CPU
STEPS="${STEPS:-10}"
for dtype in bfloat16 float32; do
  for batch in $BATCHES; do
    echo "=== SimCLR step, $dtype, batch $batch pairs" | tee -a "$LOG"
    log timeout 200 "$PY" -m bench.train_step --which simclr --simclr-variants full --impls auto \
      --no-torch --dtype "$dtype" --batch "$batch" --steps "$STEPS" --warmup 2
  done
done

for batch in $BATCHES; do
  # bench.loss_memory defaults to the CPU; "gpu" would also ask for ROCm and fail on an NVIDIA host.
  echo "=== NT-Xent memory, global batch $batch pairs, on the GPU (one device)" | tee -a "$LOG"
  log env JAX_PLATFORMS=cuda timeout 120 "$PY" -m bench.loss_memory --global_batch "$batch" --devices 1
  echo "=== NT-Xent memory, global batch $batch pairs, sharded over 8 (fake CPU) devices" | tee -a "$LOG"
  log env JAX_PLATFORMS=cpu timeout 120 "$PY" -m bench.loss_memory --global_batch "$batch" --devices 8
done
echo "done; log in $LOG"
