"""visionax: CS231n (2021) as a functional JAX/Flax library."""

__version__ = "0.1.0"
