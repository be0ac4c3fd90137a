"""Pixel-by-pixel sampling: every drawn sub-pixel is the categorical draw, with the documented key, from
the logits of the finished samples at its position (causality makes those the logits it was drawn
from), and the sampler compiles once per shape."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from visionax.generative import sampling
from visionax.generative.pixelcnn import PixelCNN, level_input

LEVELS = 5
SHAPE = (6, 3, 4, 3)  # N, H, W, C
TRACES = []


class CountingPixelCNN(nn.Module):
    """The gated PixelCNN, counting how often it is traced."""

    @nn.compact
    def __call__(self, images):
        TRACES.append(images.shape)
        return PixelCNN(LEVELS, color_channels=3, features=6, depth=1, first_kernel_size=3, gated=True)(images)


def test_each_draw_is_the_categorical_draw_from_the_final_samples_logits_and_one_compilation():
    model = CountingPixelCNN()
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *SHAPE[1:])))
    rng = jax.random.PRNGKey(7)
    TRACES.clear()
    samples = np.asarray(sampling.sample(model, variables, rng, SHAPE, LEVELS))
    assert len(TRACES) == 1  # the H·W·C iterations run one traced network
    assert samples.dtype == np.int32 and samples.min() >= 0 and samples.max() < LEVELS
    logits = jax.jit(model.apply)(variables, level_input(samples, LEVELS))
    traces = len(TRACES)
    _, height, width, colors = SHAPE
    for row in range(height):
        for column in range(width):
            for color in range(colors):
                key = jax.random.fold_in(rng, (row * width + column) * colors + color)
                expected = jax.random.categorical(key, logits[:, row, column, color], axis=-1)
                np.testing.assert_array_equal(samples[:, row, column, color], expected)
    assert len(np.unique(samples)) == LEVELS and len({image.tobytes() for image in samples}) == SHAPE[0]
    # other keys and parameters of the same shapes: other samples, no new trace
    other = jax.tree.map(lambda leaf: leaf + 0.1, variables)
    again = np.asarray(sampling.sample(model, other, jax.random.PRNGKey(8), SHAPE, LEVELS))
    assert len(TRACES) == traces and not np.array_equal(again, samples)
    sampling.sample(model, variables, rng, (2, *SHAPE[1:]), LEVELS)  # another shape: compiled anew
    assert len(TRACES) == traces + 1
