"""conv_impl "onednn" (oneDNN through XLA FFI) equals lax.conv_general_dilated within 1e-5: values,
input and kernel gradients, under jit, grad and shard_map, with the forms it does not cover routed
to the gemm path; and a missing compiler or oneDNN is a one-line UserError."""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from test_conv import CASES, DN, TOL, _check, _inputs, _normal
from visionax.errors import UserError
from visionax.layers import conv as convmod
from visionax.layers import onednn_conv
from visionax.layers.conv import conv_general_dilated_for
from visionax.models import get_model

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and os.uname().machine == "x86_64"),
    reason="oneDNN convolutions are built for x86-64 Linux only")

# forms oneDNN does not take (input dilation, negative padding): the gemm path computes them
NOT_COVERED = {"negative_pad", "lhs_dilation", "lhs_dilation_s2"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_onednn_matches_lax_values_and_grads(case):
    name, spatial, kernel, cin, cout, kw = case
    x, w, rng = _inputs(3, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    conv = conv_general_dilated_for("onednn")
    _check(conv, x, w, rng, dimension_numbers=DN, **kw)
    # the gradient's HLO calls the three oneDNN primitives exactly where oneDNN applies
    hlo = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w, dimension_numbers=DN, **kw) ** 2),
                           argnums=(0, 1))).lower(x, w).as_text()
    for target in ("forward", "backward_data", "backward_weights"):
        assert (f"visionax_onednn_conv_{target}" in hlo) == (name not in NOT_COVERED), target


def test_onednn_with_lax_default_layout_and_batch_of_one():
    # NCHW / OIHW, one image, groups and a stride: the transposes around the NHWC primitive
    rng = np.random.default_rng(4)
    x = _normal(rng, (1, 4, 9, 7))
    w = _normal(rng, (6, 2, 3, 3), 0.3)
    _check(conv_general_dilated_for("onednn"), x, w, rng, window_strides=(2, 1),
           padding=((1, 1), (0, 2)), feature_group_count=2)


def test_onednn_in_resnet_equals_xla_loss_and_gradients():
    model_of = lambda impl: get_model("resnet18", num_classes=10, width=8, cifar_stem=True,
                                      conv_impl=impl)
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    labels = jnp.arange(4) % 10
    variables = model_of("xla").init(jax.random.key(1), x)

    def loss(params, impl):
        logits, _ = model_of(impl).apply({**variables, "params": params}, x, train=True,
                                         mutable=["batch_stats"])
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref_loss, ref_grads = value_and_grad(variables["params"], "xla")
    got_loss, got_grads = value_and_grad(variables["params"], "onednn")
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5),
                 got_grads, ref_grads)


@pytest.mark.parametrize("impl", ["onednn", "xla"])
def test_onednn_under_shard_map_equals_one_device(impl):
    # replicated kernel, batch split over 8 devices: the kernel gradient comes back summed over
    # the devices (replicated), as for XLA's own convolution
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))
    rng = np.random.default_rng(5)
    x = _normal(rng, (16, 6, 6, 4))
    w = _normal(rng, (3, 3, 4, 5), 0.3)
    conv = functools.partial(conv_general_dilated_for(impl), window_strides=(1, 1),
                             padding="SAME", dimension_numbers=DN)
    loss = lambda conv, x, w: jnp.sum(jnp.tanh(conv(x, w)))
    sharded = jax.jit(jax.shard_map(jax.grad(functools.partial(loss, conv), argnums=(0, 1)),
                                    mesh=mesh, in_specs=(P("data"), P()),
                                    out_specs=(P("data"), P())))
    reference = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                                  dimension_numbers=DN)
    for got, want in zip(sharded(x, w), jax.grad(functools.partial(loss, reference),
                                                 argnums=(0, 1))(x, w)):
        np.testing.assert_allclose(got, want, **TOL)


def test_onednn_under_vmap_equals_lax():
    # per-example convolutions (e.g. per-example gradients): one FFI call per example
    rng = np.random.default_rng(7)
    x = _normal(rng, (3, 2, 6, 6, 4))
    w = _normal(rng, (3, 3, 3, 4, 5), 0.3)
    kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN)
    got = jax.jit(jax.vmap(lambda x, w: conv_general_dilated_for("onednn")(x, w, **kw)))(x, w)
    want = jax.vmap(lambda x, w: lax.conv_general_dilated(x, w, **kw))(x, w)
    np.testing.assert_allclose(got, want, **TOL)


def test_auto_uses_onednn_on_the_cpu():
    x, w, rng = _inputs(6, (8, 8), (3, 3), 4, 6, 1)
    conv = conv_general_dilated_for("auto")
    _check(conv, x, w, rng, window_strides=(1, 1), padding="SAME", dimension_numbers=DN)
    hlo = jax.jit(lambda x, w: conv(x, w, (1, 1), "SAME", dimension_numbers=DN)).lower(x, w).as_text()
    assert "visionax_onednn_conv_forward" in hlo


def test_missing_compiler_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONAX_CACHE", str(tmp_path))  # nothing built there yet
    monkeypatch.setattr(onednn_conv.shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="no C\\+\\+ compiler"):
        onednn_conv.load.__wrapped__()


def test_missing_onednn_is_a_user_error_and_auto_warns(monkeypatch):
    monkeypatch.setattr(onednn_conv, "_prefix_with", lambda relative: None)
    monkeypatch.setattr(onednn_conv, "load", onednn_conv.load.__wrapped__)
    with pytest.raises(UserError, match="pip install 'onednn-cpu-gomp"):
        onednn_conv.load()
    with pytest.warns(UserWarning, match="conv_impl='auto' uses the slower"):
        assert not onednn_conv.available.__wrapped__()


def test_build_failure_is_a_user_error(tmp_path, monkeypatch):
    broken = tmp_path / "broken.cc"
    broken.write_text("this is not C++\n")
    monkeypatch.setenv("VISIONAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(onednn_conv, "_SOURCE", broken)
    with pytest.raises(UserError, match="building the oneDNN convolution failed"):
        onednn_conv.load.__wrapped__()
