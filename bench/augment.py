"""Augmentation throughput: the on-device pipelines alone, in images/s.

    python -m bench.augment [--batch 128] [--reps 5]

- SimCLR views (`visionax.data.augment.simclr_views`, CIFAR settings: random resized crop to 32×32,
  flip, colour jitter 0.8, grayscale 0.2; and with Gaussian blur added): views/s (2 per image).
- Supervised CIFAR augmentation (random crop with 4-pixel padding + horizontal flip): images/s.

Each is jitted on uint8 batches `[batch, 32, 32, 3]` and timed after a warm-up; best of `--reps`.
Compare with the training step's image rate (bench/train_step.py): the issue asks for ≥ 5×, so
that augmenting on the device never bounds training.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from visionax.data.augment import ViewSettings, horizontal_flip, random_crop, simclr_views
from visionax.data.preprocess import model_input


def best_of(fn, args, reps):
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def crop_flip(key, images):
    keys = jax.random.split(key, images.shape[0])

    def one(k, image):
        crop_key, flip_key = jax.random.split(k)
        return horizontal_flip(flip_key, random_crop(crop_key, image, 4))

    return jax.vmap(one)(keys, model_input(images))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (args.batch, 32, 32, 3), dtype=np.uint8))
    key = jax.random.key(0)
    print(f"device {jax.devices()[0].device_kind}, batch {args.batch} uint8 32x32x3")
    cases = [
        ("simclr_views (crop, flip, jitter, gray)", 2,
         jax.jit(lambda k, x: simclr_views(k, x, ViewSettings(output_size=(32, 32))))),
        ("simclr_views + gaussian blur 0.5", 2,
         jax.jit(lambda k, x: simclr_views(
             k, x, ViewSettings(output_size=(32, 32), blur_probability=0.5)))),
        ("crop(pad 4) + flip (supervised)", 1, jax.jit(crop_flip)),
    ]
    for name, per_image, fn in cases:
        t = best_of(fn, (key, images), args.reps)
        rate = per_image * args.batch / t
        print(f"  {name:42s} {1e3 * t:8.1f} ms/batch {rate:10.0f} {'views' if per_image == 2 else 'images'}/s")


if __name__ == "__main__":
    main()
