"""DCGAN on the embedded digits: the non-saturating and the minimax generator losses side by side,
the same data, initialisation and noise, a few minutes on 2 CPU cores.

    python -m experiments.gan                     # the digits figures of MEASUREMENTS.md
    python -m experiments.gan --config.epochs=2 --config.eval_every=0 --config.classifier_epochs=1   # CI smoke run
    python -m experiments.gan --config.losses=non_saturating,minimax,least_squares --config.discriminator_steps=2
    python -m experiments.gan --config=experiments/configs/gan_cifar10.py --config.data.folder=<dir>   # CIFAR-10
"""

import ml_collections

from experiments.configs import generative, training


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 64 = 22 steps (rounds of the game) an epoch
    config = training.base(batch_size=64, epochs=40, log_every=11, checkpoint_every=440, eval_every=44)
    del config.init_from  # both players start from the seed
    config.losses = "non_saturating,minimax"  # comma-separated names of visionax.generative.gan.GAME_LOSSES
    config.discriminator_steps = 1  # k discriminator updates (each on batch/k real images) per generator update
    config.latent_dim = 32  # z ~ N(0, I)
    # Generator: dense to a map of widths[0] at (image size / 2^len) a side, then ×2 per width; the
    # discriminator: ÷2 per width (no normalisation), then one logit.
    config.generator_widths = (64, 32)
    config.discriminator_widths = (32, 64)
    config.dtype = "float32"
    config.conv_impl = "auto"  # the discriminator's convolutions (visionax.layers.conv.CONV_IMPLS)
    # Adam for each player, constant rates, β₁ = 0.5 as in DCGAN. The discriminator learns 5× faster
    # than DCGAN's 2e-4 and rejects the early samples confidently (D(G(z)) ≈ 0.05 after 4 epochs): the
    # regime where the minimax generator's gradient vanishes and the non-saturating one does not.
    config.generator_learning_rate = 2e-4
    config.discriminator_learning_rate = 1e-3
    config.beta1 = 0.5
    config.beta2 = 0.999
    # Latent-vector arithmetic on the first loss's samples: z̄_a − z̄_b + z̄_c over the samples the
    # classifier assigns to classes a, b, c ("a,b,c"; "": the three classes it assigns most samples to)
    config.latent_arithmetic = ""
    return generative.sample_quality(config, num_samples=359)  # all the 359 test digits
