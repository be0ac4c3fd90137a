"""MoCo v1 on the embedded digits: linear head, τ = 0.07, step schedule (×0.1 at 60% and 80%),
colour jitter always on.

    python -m experiments.moco --config=experiments/configs/moco_v1.py
"""

from experiments.configs import moco


def get_config():
    config = moco.get_config()
    config.head_layers = 1
    config.temperature = 0.07
    config.schedule = "step"
    config.augment.jitter_probability = 1.0
    return config
