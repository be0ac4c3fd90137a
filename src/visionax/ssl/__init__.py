"""Self-supervised learning (lecture 14): SimCLR (`visionax.ssl.simclr`) and MoCo
(`visionax.ssl.moco`), sharing the encoder-plus-projection-head model of `visionax.ssl.heads`, and
contrastive predictive coding over a grid of patches (`visionax.ssl.cpc`)."""
