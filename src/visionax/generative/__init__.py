"""Generative models of lecture 12: explicit densities computed exactly (PixelCNN, gated PixelCNN,
PixelRNN's Row LSTM), an explicit density bounded from below (the VAE) and an implicit density
learned through a game (the GAN).

Modules: `likelihood` (quantisation of uint8 images to `levels` values, bits per dimension),
`pixelcnn`, `pixelrnn`, `sampling` (pixel-by-pixel sampling), `autoregressive` (the models by name,
their maximum-likelihood step and test bits/dim), `vae`, `gan`. The masked convolution
is `visionax.layers.masked_conv`; the adversarial losses are `visionax.losses.adversarial`; sample
quality (a Fréchet distance and a classifier score in a trained classifier's features) is
`visionax.evaluate.generative`.
"""
