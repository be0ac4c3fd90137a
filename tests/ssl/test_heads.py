"""The projection head against NumPy, and the embedding through the one image convention."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from visionax.ssl.heads import ContrastiveModel, ProjectionHead, embed


def test_projection_head_matches_numpy_in_training_mode():
    head = ProjectionHead(hidden_dim=6, output_dim=3, num_layers=2, batch_norm=True)
    x = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    variables = head.init(jax.random.key(0), x)
    out, _ = head.apply(variables, x, train=True, mutable=["batch_stats"])
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), variables["params"])
    hidden = x @ params["Dense_0"]["kernel"]  # no bias: BatchNorm's β replaces it
    normalised = (hidden - hidden.mean(0)) / np.sqrt(hidden.var(0) + 1e-5)
    hidden = np.maximum(normalised * params["BatchNorm_0"]["scale"] + params["BatchNorm_0"]["bias"], 0)
    expected = hidden @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
    assert "bias" not in params["Dense_0"]
    linear = ProjectionHead(output_dim=3, num_layers=1, batch_norm=False)
    assert list(linear.init(jax.random.key(0), x)["params"]) == ["Dense_0"]


class Identity(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return x.reshape(x.shape[0], -1) * self.param("one", nn.initializers.ones, ())


def test_embed_is_the_encoder_on_the_model_input():
    model = ContrastiveModel(Identity(), ProjectionHead(hidden_dim=4, output_dim=2, batch_norm=False))
    images = np.random.default_rng(1).integers(0, 256, (3, 2, 2, 1), dtype=np.uint8)
    variables = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))
    np.testing.assert_allclose(embed(model, variables, images), images.reshape(3, -1) / 255.0, rtol=1e-6)
