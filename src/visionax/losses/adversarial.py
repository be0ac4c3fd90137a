"""Adversarial losses of lecture 12 (generative adversarial networks), from the discriminator's logits
(D = σ(logit)) or, for the least-squares GAN, its raw scores.

The binary cross-entropy is never the log of a computed sigmoid: −log σ(l) = softplus(−l) and
−log(1 − σ(l)) = softplus(l), with softplus(x) = log(1 + eˣ) evaluated stably (`jax.nn.softplus`),
so a saturated discriminator (|l| of 10⁴) gives finite losses and gradients. Every loss is a mean
over its batch; inputs may have any shape (`[batch]` or `[batch, 1]`) and are computed in float32
or wider.

The generator's two losses are the lecture's point: the original game's minimax generator minimises
E log(1 − D(G(z))), whose gradient with respect to the logit, −D(G(z)), vanishes exactly when the
generator is poor (D(G(z)) → 0); the non-saturating one minimises −E log D(G(z)), whose gradient
there, −(1 − D(G(z))), is largest.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from visionax import registry

__all__ = ["GENERATOR_LOSSES", "discriminator_loss", "generator_loss", "ls_discriminator_loss", "ls_generator_loss"]


def _at_least_float32(x: jax.Array) -> jax.Array:
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _bce_real(logits: jax.Array) -> jax.Array:
    """Mean BCE(l, 1) = −E log σ(l) = E softplus(−l)."""
    return jnp.mean(jax.nn.softplus(-_at_least_float32(logits)))


def _bce_fake(logits: jax.Array) -> jax.Array:
    """Mean BCE(l, 0) = −E log(1 − σ(l)) = E softplus(l)."""
    return jnp.mean(jax.nn.softplus(_at_least_float32(logits)))


def discriminator_loss(logits_real: jax.Array, logits_fake: jax.Array) -> jax.Array:
    """The discriminator's loss −E log D(x) − E log(1 − D(G(z))) = mean BCE(logits_real, 1) + mean
    BCE(logits_fake, 0), from the logits of real images and of generated ones."""
    return _bce_real(logits_real) + _bce_fake(logits_fake)


def _non_saturating(logits_fake: jax.Array) -> jax.Array:
    """−E log D(G(z)) = mean BCE(logits_fake, 1)."""
    return _bce_real(logits_fake)


def _minimax(logits_fake: jax.Array) -> jax.Array:
    """E log(1 − D(G(z))) = −E softplus(l): the original game's objective, minimised by the generator."""
    return -_bce_fake(logits_fake)


# kind -> logits of generated images -> the generator's loss (minimised)
GENERATOR_LOSSES = {"non_saturating": _non_saturating, "minimax": _minimax}


def generator_loss(logits_fake: jax.Array, kind: str = "non_saturating") -> jax.Array:
    """The generator's loss from the discriminator's logits of generated images: `"non_saturating"`
    −E log D(G(z)) = mean BCE(logits_fake, 1); `"minimax"` E log(1 − D(G(z))), the objective of the
    original game (negative; its gradient vanishes as D(G(z)) → 0)."""
    return registry.lookup(GENERATOR_LOSSES, kind, "generator loss kind")(logits_fake)


def ls_discriminator_loss(scores_real: jax.Array, scores_fake: jax.Array) -> jax.Array:
    """The least-squares GAN's discriminator loss ½ E[(D(x) − 1)²] + ½ E[D(G(z))²] on raw scores."""
    scores_real, scores_fake = _at_least_float32(scores_real), _at_least_float32(scores_fake)
    return 0.5 * jnp.mean(jnp.square(scores_real - 1.0)) + 0.5 * jnp.mean(jnp.square(scores_fake))


def ls_generator_loss(scores_fake: jax.Array) -> jax.Array:
    """The least-squares GAN's generator loss ½ E[(D(G(z)) − 1)²] on raw scores."""
    return 0.5 * jnp.mean(jnp.square(_at_least_float32(scores_fake) - 1.0))
