"""CLIP on the digit-string canvases (24×48, 1–4 digits, templated captions) with SimCLR's digits
encoder as the image tower (ResNet-18 CIFAR stem, width 16); zero-shot and the representation table
on the embedded digits (each 8×8 digit at the centre of a blank canvas).

    python -m experiments.clip              # zero-shot digits accuracy, recall@1/5, kNN and probe
    python -m experiments.clip --config.epochs=8   # 94.7% zero-shot, recall@1 0.69 / 0.73
    python -m experiments.clip --config.epochs=1 --config.captions.num_train=512 \
        --config.captions.num_test=200 --config.eval_every=0      # CI smoke run
    python -m experiments.clip --config.save_embeddings=True   # embeddings.npz for experiments.representations
"""

import ml_collections

from experiments.configs import ssl_base, training


def get_config() -> ml_collections.ConfigDict:
    config = ssl_base.get_base_config()
    del config.augment  # the canvases as they are: the digits already sit anywhere on them
    config.captions = ml_collections.ConfigDict({
        "num_train": 10_000,  # training canvases (39 steps an epoch at batch 256)
        "num_test": 1_000,  # held-out canvases: image→text and text→image retrieval
        "seed": 0,  # the canvases' seed (visionax.data.builders.digit_captions)
    })
    config.embed_dim = 64  # the joint image-text space
    config.text = ml_collections.ConfigDict({"width": 64, "depth": 2, "heads": 4, "mlp_dim": 128})
    config.epochs = 6  # 234 steps
    config.eval_every = 0
    # Adam with warmup and cosine decay (CLIP: AdamW); decay on kernels only (never on logit_scale)
    training.optimizer(config, "adam", 1e-3, schedule="warmup_cosine", weight_decay=1e-4, warmup_epochs=1)
    return config
