"""Shared by the tests of visionax.layers.conv: the convolution cases and the check of an
implementation's values and gradients against `lax.conv_general_dilated` (to 1e-5)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend.core import Literal

TOL = dict(rtol=1e-5, atol=1e-5)
DN = ("NHWC", "HWIO", "NHWC")

# (name, input spatial, kernel spatial, in feats, out feats, kwargs for conv_general_dilated)
CASES = [
    ("same_s1", (8, 8), (3, 3), 4, 6, dict(window_strides=(1, 1), padding="SAME")),
    ("valid_s1", (7, 8), (3, 3), 4, 5, dict(window_strides=(1, 1), padding="VALID")),
    ("same_s2", (8, 8), (3, 3), 3, 4, dict(window_strides=(2, 2), padding="SAME")),
    ("same_s2_odd", (7, 9), (3, 3), 3, 4, dict(window_strides=(2, 2), padding="SAME")),
    ("valid_s2_even_k", (9, 8), (4, 2), 3, 4, dict(window_strides=(2, 3), padding="VALID")),
    ("explicit_pad", (6, 7), (3, 2), 3, 4,
     dict(window_strides=(1, 1), padding=((2, 0), (1, 3)))),
    ("explicit_pad_s2", (7, 7), (3, 3), 2, 4,
     dict(window_strides=(2, 1), padding=((1, 2), (0, 1)))),
    ("explicit_pad_3x3_odd", (7, 9), (3, 3), 4, 5,
     dict(window_strides=(1, 1), padding=((2, 0), (1, 3)))),
    ("negative_pad", (8, 8), (3, 3), 2, 3,
     dict(window_strides=(1, 1), padding=((-1, 1), (1, -2)))),
    ("one_by_one_s2", (8, 8), (1, 1), 5, 7, dict(window_strides=(2, 2), padding="VALID")),
    ("one_by_one_s1", (5, 6), (1, 1), 5, 7, dict(window_strides=(1, 1), padding="SAME")),
    ("stem_7x7_s2", (12, 12), (7, 7), 3, 4, dict(window_strides=(2, 2), padding=((3, 3), (3, 3)))),
    ("rhs_dilation", (9, 9), (3, 3), 3, 4,
     dict(window_strides=(1, 1), padding="SAME", rhs_dilation=(2, 3))),
    ("rhs_dilation_s2", (11, 10), (3, 2), 3, 4,
     dict(window_strides=(2, 2), padding="VALID", rhs_dilation=(2, 2))),
    ("lhs_dilation", (5, 6), (3, 3), 3, 4,
     dict(window_strides=(1, 1), padding=((2, 2), (1, 2)), lhs_dilation=(2, 2))),
    ("lhs_dilation_s2", (5, 5), (3, 3), 3, 4,
     dict(window_strides=(2, 1), padding=((1, 1), (2, 0)), lhs_dilation=(2, 3))),
    ("groups2", (8, 8), (3, 3), 4, 6,
     dict(window_strides=(1, 1), padding="SAME", feature_group_count=2)),
    ("groups3_s2", (9, 8), (3, 3), 6, 9,
     dict(window_strides=(2, 2), padding="SAME", feature_group_count=3)),
    ("groups2_dil", (9, 9), (3, 3), 4, 4,
     dict(window_strides=(1, 1), padding="VALID", feature_group_count=2, rhs_dilation=(2, 1))),
    # 16+ input features: the kernel gradient's transposed-patches form
    ("wide_same_s1", (6, 5), (3, 3), 16, 8, dict(window_strides=(1, 1), padding="SAME")),
    ("wide_valid_s2_dil", (9, 8), (3, 2), 20, 6,
     dict(window_strides=(2, 1), padding="VALID", rhs_dilation=(1, 2))),
    ("depthwise", (8, 8), (3, 3), 5, 5,
     dict(window_strides=(1, 1), padding="SAME", feature_group_count=5)),
    ("depthwise_s2", (9, 8), (3, 3), 4, 4,
     dict(window_strides=(2, 2), padding="SAME", feature_group_count=4)),
    ("depthwise_mult2", (7, 7), (3, 3), 3, 6,
     dict(window_strides=(1, 2), padding="VALID", feature_group_count=3, rhs_dilation=(1, 2))),
]
CASE_IDS = [case[0] for case in CASES]


def case(name: str):
    """The entry of CASES called `name`."""
    return next(c for c in CASES if c[0] == name)


def normal(rng, shape, scale=1.0):
    # numpy, not jax.random: each new jax.random shape costs a compilation of seconds on the CPU
    return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * scale)


def inputs(seed, spatial, kernel, cin, cout, groups):
    """(x [2, *spatial, cin], w [*kernel, cin / groups, cout], the generator for more)."""
    rng = np.random.default_rng(seed)
    x = normal(rng, (2, *spatial, cin))
    w = normal(rng, (*kernel, cin // groups, cout), 0.3)
    return x, w, rng


def value_and_grads(conv, kw):
    """jit(x, w, dy -> (y, dx, dw)): one compilation per case instead of one per eager op."""

    def f(x, w, dy):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, **kw), x, w)
        return (y, *vjp(dy))

    return jax.jit(f)


def check(conv, x, w, rng, **kw):
    """`conv`'s value, input gradient and kernel gradient equal lax's (shape, dtype, 1e-5)."""
    shape = jax.eval_shape(lambda x, w: lax.conv_general_dilated(x, w, **kw), x, w)
    dy = normal(rng, shape.shape)
    ref = value_and_grads(lax.conv_general_dilated, kw)(x, w, dy)
    got = value_and_grads(conv, kw)(x, w, dy)
    for g, r, name in zip(got, ref, ("y", "dx", "dw")):
        assert g.shape == r.shape and g.dtype == r.dtype, name
        np.testing.assert_allclose(g, r, err_msg=name, **TOL)


def check_case(conv, name: str, seed: int):
    """`check` on the case `name` of CASES, inputs drawn with `seed`, layout NHWC / HWIO."""
    _, spatial, kernel, cin, cout, kw = case(name)
    x, w, rng = inputs(seed, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    check(conv, x, w, rng, dimension_numbers=DN, **kw)



def live_equations(jaxpr):
    """The equations the outputs of `jaxpr` depend on (each with every equation inside it: jit,
    custom_vjp, scan, ...), so that a traced but unused computation is not counted."""
    needed = {v for v in jaxpr.outvars if not isinstance(v, Literal)}
    live = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars):
            live.append(eqn)
            needed.update(v for v in eqn.invars if not isinstance(v, Literal))
    return [inner for eqn in reversed(live) for inner in _with_inner(eqn)]


def _with_inner(eqn):
    yield eqn
    for value in eqn.params.values():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            inner = getattr(item, "jaxpr", item)
            if hasattr(inner, "eqns"):
                for inner_eqn in inner.eqns:
                    yield from _with_inner(inner_eqn)


def traced(conv, x, w, **kw):
    """(live equations of conv's forward pass, of its value, input and kernel gradient)."""
    shape = jax.eval_shape(lambda x, w: conv(x, w, **kw), x, w)

    def full(x, w, dy):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, **kw), x, w)
        return (y, *vjp(dy))

    forward = jax.make_jaxpr(lambda x, w: conv(x, w, **kw))(x, w).jaxpr
    full = jax.make_jaxpr(full)(x, w, jnp.ones(shape.shape, shape.dtype)).jaxpr
    return live_equations(forward), live_equations(full)


def count(eqns, primitive: str) -> int:
    return sum(eqn.primitive.name == primitive for eqn in eqns)
