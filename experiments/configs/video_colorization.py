"""Colourising video to learn tracking on embedded synthetic videos (`visionax.data.video`: 8 frames of
32×32, three striped, nearly isoluminant digits, squares or discs bouncing over a textured background,
2% camera noise): a 5-layer fully convolutional encoder at stride 2 (16×16 feature maps), each frame
coloured from the one before, then frame 0's masks carried frame to frame through the learned
attention against the random CNN, the nearest grey pixel and the identity. About 2 minutes of 2 CPU
cores (2.6 minutes wall measured beside other jobs).

    python -m experiments.video_colorization      # tracking IoU: learned vs random CNN, nearest grey pixel, identity
    python -m experiments.video_colorization --config.epochs=1 --config.data.num_train=256 \
        --config.data.num_test=32 --config.eval_every=0                                      # CI smoke run
    python -m experiments.video_colorization --config.data.stripes=0   # flat colours: the nearest grey pixel wins

Measured with no flags (256 steps, mean IoU over objects and frames 1…7 of 128 test videos):
colourisation 0.386 (τ=0.3), random CNN 0.008, nearest grey pixel 0.268 (τ=1e-5; 0.29 carried from
frame 0 to each frame directly instead), identity 0.191. The learned tracker is best at frame 1 (0.59)
and drifts (0.26 at frame 7); the grey pixel goes 0.27 → 0.23, the identity 0.48 → 0.07. Where pixels
alone tell objects apart, the nearest grey pixel wins instead: flat objects (`--config.data.stripes=0`) 0.398 learned vs
0.429, flat and of independent lightness (`--config.data.lightness_spread=20` as well) 0.449 vs 0.542.
The stripes make pixel values overlap from object to object while a CNN still tells the stripe
patterns apart; colour is then not predictable from grey, the premise of colourisation as tracking.

Built on `training.base`, not `ssl_base`: the shared encoder pools its maps to one vector and the data
are videos, not the digits, so neither the ResNet keys nor the views apply. This run is not a row of
`experiments.representations` (its encoder sees videos, not the digits).
"""

import ml_collections

from experiments.configs import training


def get_config() -> ml_collections.ConfigDict:
    config = training.base(batch_size=32, epochs=8, log_every=10, checkpoint_every=100, eval_every=100)
    del config.validation_fraction  # no labels are trained on
    config.data = ml_collections.ConfigDict({
        "name": "moving_objects",  # visionax.data.video.moving_objects, drawn from config.seed
        "num_train": 1024, "num_test": 128,  # videos
        "frames": 8, "height": 32, "width": 32, "objects": 3,
        "min_size": 8, "max_size": 12,  # sprite sides in pixels
        "max_speed": 2,  # pixels a frame along each axis
        "texture": 0.1,  # the background's static texture, a fraction of its colour
        "noise": 0.02,  # camera noise drawn anew in every frame, a fraction of each pixel's colour
        "lightness_spread": 3.0,  # the objects' L* within ± this of one another: grey does not tell them apart
        "stripes": 0.25,  # the amplitude of each object's own stripes (a fraction of its colour; 0: flat)
    })
    config.dtype = "float32"
    config.conv_impl = "auto"  # oneDNN on the CPU: about 1.5× faster steps than XLA's convolutions here
    config.widths = (32, 32, 32, 32)  # 3×3 convolutions, the first at `stride`
    config.dilations = (1, 1, 2, 4)  # receptive field 31 pixels at stride 2: a whole sprite and its surround
    config.stride = 2  # 1: full-resolution feature maps (4× the positions, 16× the attention)
    config.feature_dim = 64
    config.temperature = 1.0  # τ of the attention (the paper's 1)
    config.grid_size = 10.0  # a*b* quantisation cells (visionax.data.color.quantize_ab)
    config.ab_range = 110.0
    config.track_temperatures = (1.0, 0.3, 0.1)  # the learned and random CNN's tracking τ: each reports its best
    config.pixel_temperatures = (0.00001, 0.0001, 0.001)  # the grey-pixel baseline's: it reports its best
    config.figure_videos = 4  # test videos drawn in tracking.png
    training.optimizer(config, "adam", 2e-3, schedule="cosine", weight_decay=0.0)
    return config
