"""Every representation of lecture 13 on the embedded digits, with SimCLR's digits encoder (ResNet-18,
CIFAR stem, width 16) and 40 seconds of training each: about 15 minutes on 2 CPU cores.

    python -m experiments.representations                  # the table of MEASUREMENTS.md
    python -m experiments.representations --config.methods=rotation,simclr --config.budget_seconds=20
    python -m experiments.representations --config.methods=supervised,rotation --config.budget_seconds=2 \\
        --config.calibration_steps=1                       # CI smoke run
    python -m experiments.representations --config=experiments/configs/representations.py:cifar10 \\
        --config.data.folder=<dir>/cifar10-jpeg     # 30 minutes of training each, about 4.5 hours

Variant `cifar10`: every method but CLIP (an image folder has no captions) from its own CIFAR-10
recipe (`representations.METHODS`: e.g. relative position's 7-pixel patches, CPC's 16-pixel ones,
SimCLR's and MoCo's `cpu30`; the table of MEASUREMENTS.md had SimCLR's earlier τ 0.2 and LARS 1.0),
all with `ssl_base.cpu30`'s encoder (ResNet-18 width 32, ImageNet stem) and batch 256, 1,800 s each;
a stopped run started again resumes.
"""

import ml_collections

from experiments import representations
from experiments.configs import data_sources, ssl_base


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    base = ssl_base.get_base_config()
    config = ml_collections.ConfigDict()
    config.methods = ",".join(representations.METHODS)  # comma-separated, trained in this order
    config.budget_seconds = 40.0  # training time of every method (whole epochs: at least one)
    config.calibration_steps = 4  # steps timed (after one that compiles) to fit the budget
    config.cifar10_recipes = False  # True: each method starts from its CIFAR-10 recipe (representations.METHODS)
    # the encoder, batch, data, seed and devices every method's run takes (representations.SHARED_KEYS)
    config.model = base.model
    config.model_options = base.model_options
    config.dtype = base.dtype
    config.conv_impl = base.conv_impl
    config.data = base.data
    config.seed = 0
    config.parallel = base.parallel
    config.batch_size = base.batch_size  # images per batch (each method makes its views or rotations of them)
    if variant == "cifar10":
        # CLIP trains on the digits' captioned canvases: an image folder has no captions
        config.methods = ",".join(name for name in representations.METHODS if name != "clip")
        config.budget_seconds = 1800.0
        config.cifar10_recipes = True
        config.data = data_sources.image_folder(image_size=32)
        # ssl_base.cpu30's encoder: ResNet-18 width 32, ImageNet stem (fast enough on 2 cores)
        config.model_options = ml_collections.ConfigDict({"cifar_stem": False, "width": 32})
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of representations.py; use :cifar10 or none")
    return config
