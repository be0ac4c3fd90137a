"""Variational autoencoders on the embedded digits: latent sizes 16 and 2, the discretised logistic over
the digits' 17 grey levels (bits/dim that compare with PixelCNN's), about 6 minutes on 2 CPU cores.

    python -m experiments.vae                                   # both latent sizes (the cross-family table)
    python -m experiments.vae --config.decoder=bernoulli        # Bernoulli decoder on [0, 1] grey levels
    python -m experiments.vae --config.latent_sizes=2 --config.epochs=10 --config.classifier_epochs=1 \
        --config.iwae_samples=10                                # CI smoke run
"""

import ml_collections

from experiments.configs import generative, training


def get_config() -> ml_collections.ConfigDict:
    # 1,438 training digits / 128 = 11 steps an epoch
    config = training.base(batch_size=128, epochs=200, log_every=11, checkpoint_every=440, eval_every=440)
    del config.init_from  # nothing to start from: both networks are trained here
    config.latent_sizes = "16,2"  # comma-separated: one VAE per size, in <workdir>/latent<size>; 2 draws manifold.png
    config.width = 32  # channels of the first convolution, doubled at each halving (8×8 → 4×4: once)
    config.decoder = "discretized_logistic"  # or "bernoulli" (a cross-entropy on [0, 1] grey levels)
    config.levels = 17  # bins of the discretised logistic: the images are quantised to this many values
    config.dtype = "float32"
    config.conv_impl = "xla"
    training.optimizer(config, "adam", 0.001, schedule="cosine", weight_decay=0.0)
    # Test evaluation: negative ELBO and importance-weighted NLL from the same iwae_samples draws per image.
    config.iwae_samples = 100
    config.eval_examples = 0  # the first this many test images (0: all of them)
    config.eval_batch_size = 120  # a multiple of the device count
    generative.sample_quality(config, num_samples=359)  # every test digit against as many samples
    # Figures: `shown` test images above their reconstructions, interpolations with interpolation_steps
    # decodes between two test images, and a manifold_size × manifold_size grid of the 2-D latent plane.
    config.shown = 12
    config.interpolation_steps = 10
    config.manifold_size = 15
    return config
