"""conv_impl "onednn" (oneDNN through XLA FFI) equals lax.conv_general_dilated within 1e-5: values,
input and kernel gradients, under jit, grad and vmap, under shard_map with check_vma True and False
(the training wrapper's setting, `visionax.parallel.DataParallel`) and under pmap over 8 devices,
in a ResNet, with the forms it does not cover routed to the gemm path. Building and loading its
library: test_onednn_build.py."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from tests.layers.conv.cases import CASE_IDS, DN, TOL, case, check, check_case, inputs, normal
from visionax.layers.conv import conv_general_dilated_for, onednn_build
from visionax.models import get_model
from visionax.parallel import DATA_AXIS, DataParallel, make_mesh

pytestmark = pytest.mark.skipif(not onednn_build.supported_platform(),
                                reason="oneDNN convolutions are built for x86-64 Linux only")

ONEDNN = conv_general_dilated_for("onednn")
# forms oneDNN does not take (input dilation, negative padding): the gemm path computes them
NOT_COVERED = {"negative_pad", "lhs_dilation", "lhs_dilation_s2"}
DEVICES = 8


@pytest.mark.parametrize("name", CASE_IDS)
def test_onednn_matches_lax_values_and_grads(name):
    check_case(ONEDNN, name, seed=3)
    # the gradient's HLO calls the three oneDNN primitives exactly where oneDNN applies
    _, spatial, kernel, cin, cout, kw = case(name)
    x, w, _ = inputs(3, spatial, kernel, cin, cout, kw.get("feature_group_count", 1))
    hlo = jax.jit(jax.grad(lambda x, w: jnp.sum(ONEDNN(x, w, dimension_numbers=DN, **kw) ** 2),
                           argnums=(0, 1))).lower(x, w).as_text()
    for target in ("forward", "backward_data", "backward_weights"):
        assert (onednn_build.TARGET_PREFIX + target in hlo) == (name not in NOT_COVERED), target


def test_onednn_with_lax_default_layout_and_batch_of_one():
    # NCHW / OIHW, one image, groups and a stride: the transposes around the NHWC primitive
    rng = np.random.default_rng(4)
    x = normal(rng, (1, 4, 9, 7))
    w = normal(rng, (6, 2, 3, 3), 0.3)
    check(ONEDNN, x, w, rng, window_strides=(2, 1), padding=((1, 1), (0, 2)),
          feature_group_count=2)


def _resnet(impl, bn_axis_name=None):
    return get_model("resnet18", num_classes=10, width=8, cifar_stem=True, conv_impl=impl,
                     bn_axis_name=bn_axis_name)


def _cross_entropy(logits, labels):
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def test_onednn_in_resnet_equals_xla_loss_and_gradients():
    x = jax.random.normal(jax.random.key(0), (4, 16, 16, 3))
    labels = jnp.arange(4) % 10
    variables = _resnet("xla").init(jax.random.key(1), x)

    def loss(params, impl):
        logits, _ = _resnet(impl).apply({**variables, "params": params}, x, train=True,
                                        mutable=["batch_stats"])
        return _cross_entropy(logits, labels)

    value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
    ref_loss, ref_grads = value_and_grad(variables["params"], "xla")
    got_loss, got_grads = value_and_grad(variables["params"], "onednn")
    np.testing.assert_allclose(got_loss, ref_loss, rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5),
                 got_grads, ref_grads)


def _mesh():
    return Mesh(np.array(jax.devices()[:DEVICES]), (DATA_AXIS,))


@pytest.mark.parametrize("impl", ["onednn", "xla"])
def test_onednn_under_shard_map_checking_vma_equals_one_device(impl):
    # replicated kernel, batch split over 8 devices: the kernel gradient comes back summed over
    # the devices (replicated), as for XLA's own convolution
    rng = np.random.default_rng(5)
    x = normal(rng, (16, 6, 6, 4))
    w = normal(rng, (3, 3, 4, 5), 0.3)
    conv = functools.partial(conv_general_dilated_for(impl), window_strides=(1, 1),
                             padding="SAME", dimension_numbers=DN)
    loss = lambda conv, x, w: jnp.sum(jnp.tanh(conv(x, w)))
    sharded = jax.jit(jax.shard_map(jax.grad(functools.partial(loss, conv), argnums=(0, 1)),
                                    mesh=_mesh(), in_specs=(P("data"), P()),
                                    out_specs=(P("data"), P())))
    reference = functools.partial(lax.conv_general_dilated, window_strides=(1, 1), padding="SAME",
                                  dimension_numbers=DN)
    for got, want in zip(sharded(x, w), jax.grad(functools.partial(loss, reference),
                                                 argnums=(0, 1))(x, w)):
        np.testing.assert_allclose(got, want, **TOL)


KW = dict(window_strides=(2, 1), padding="SAME", dimension_numbers=DN, feature_group_count=2)


def _per_device_inputs():
    """x [16, 7, 6, 4] (2 examples per device), w [3, 3, 2, 6] replicated, dy like y."""
    rng = np.random.default_rng(12)
    x = normal(rng, (2 * DEVICES, 7, 6, 4))
    w = normal(rng, (3, 3, 2, 6), 0.3)
    dy = normal(rng, jax.eval_shape(lambda x, w: lax.conv_general_dilated(x, w, **KW), x, w).shape)
    return x, w, dy


def _on_one_device(x, w, dy):
    """lax on one device, per device's slice: (y, dx, dw of each slice [8, *w.shape])."""
    def one(x, dy):
        y, vjp = jax.vjp(lambda x, w: lax.conv_general_dilated(x, w, **KW), x, w)
        return (y, *vjp(dy))

    split = lambda a: a.reshape(DEVICES, -1, *a.shape[1:])
    y, dx, dw = jax.jit(jax.vmap(one))(split(x), split(dy))
    return y.reshape(-1, *y.shape[2:]), dx.reshape(-1, *dx.shape[2:]), dw


def _run_checking_onednn(function, impl, *args):
    """function(*args), after checking that its program calls the three oneDNN primitives iff
    `impl` is "onednn"."""
    lowered = function.lower(*args)
    hlo = lowered.as_text()
    for target in ("forward", "backward_data", "backward_weights"):
        assert (onednn_build.TARGET_PREFIX + target in hlo) == (impl == "onednn"), target
    return lowered.compile()(*args)


def _device_pass(conv):
    def per_device(x, w, dy):
        y, vjp = jax.vjp(lambda x, w: conv(x, w, **KW), x, w)
        dx, dw = vjp(dy)
        return y, dx, dw
    return per_device


@pytest.mark.parametrize("impl", ["onednn", "xla"])
def test_onednn_under_shard_map_without_vma_equals_one_device(impl):
    # check_vma=False (DataParallel's): each device's kernel gradient is its own, not summed
    x, w, dy = _per_device_inputs()
    per_device = _device_pass(conv_general_dilated_for(impl))

    def stacking_kernel_gradients(x, w, dy):
        y, dx, dw = per_device(x, w, dy)
        return y, dx, dw[None]

    sharded = jax.jit(jax.shard_map(
        stacking_kernel_gradients, mesh=_mesh(), in_specs=(P("data"), P(), P("data")),
        out_specs=(P("data"), P("data"), P("data")), check_vma=False))
    got = _run_checking_onednn(sharded, impl, x, w, dy)
    want = _on_one_device(x, w, dy)
    for g, r, name in zip(got, want, ("y", "dx", "dw per device")):
        np.testing.assert_allclose(g, r, err_msg=name, **TOL)
    # the devices' kernel gradients add up to the whole batch's
    _, vjp = jax.vjp(lambda w: lax.conv_general_dilated(x, w, **KW), w)
    np.testing.assert_allclose(got[2].sum(0), vjp(dy)[0], **TOL)


@pytest.mark.parametrize("impl", ["onednn", "xla"])
def test_onednn_under_pmap_equals_one_device(impl):
    x, w, dy = _per_device_inputs()
    split = lambda a: a.reshape(DEVICES, -1, *a.shape[1:])
    mapped = jax.pmap(_device_pass(conv_general_dilated_for(impl)), axis_name=DATA_AXIS,
                      in_axes=(0, None, 0), devices=jax.devices()[:DEVICES])
    y, dx, dw = _run_checking_onednn(mapped, impl, split(x), w, split(dy))
    want = _on_one_device(x, w, dy)
    for g, r, name in zip((y.reshape(-1, *y.shape[2:]), dx.reshape(-1, *dx.shape[2:]), dw), want,
                          ("y", "dx", "dw per device")):
        np.testing.assert_allclose(g, r, err_msg=name, **TOL)


@pytest.mark.parametrize("parallel", ["shard_map", "pmap"])
def test_onednn_resnet_step_over_8_devices_equals_xla_on_one(parallel):
    # DataParallel's per-device step (BatchNorm synced over the devices, gradients and loss
    # pmean'd) with the oneDNN ResNet against the whole batch through XLA on one device
    images = jax.random.normal(jax.random.key(0), (2 * DEVICES, 8, 8, 3))
    labels = jnp.arange(2 * DEVICES) % 10
    variables = _resnet("xla").init(jax.random.key(1), images[:2])

    def gradients(model, variables, images, labels):
        def loss(params):
            logits, updates = model.apply({**variables, "params": params}, images, train=True,
                                          mutable=["batch_stats"])
            return _cross_entropy(logits, labels), updates["batch_stats"]

        (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
        return {"loss": value, "grads": grads, "batch_stats": stats}

    def per_device_step(variables, batch):
        out = gradients(_resnet("onednn", DATA_AXIS), variables, batch["image"], batch["label"])
        out = {**out, "loss": lax.pmean(out["loss"], DATA_AXIS),
               "grads": lax.pmean(out["grads"], DATA_AXIS)}
        return out, {"loss": out["loss"]}

    data_parallel = DataParallel(make_mesh(jax.devices()[:DEVICES]), impl=parallel)
    step = data_parallel.step(per_device_step, donate=False)
    got, _ = _run_checking_onednn(
        step, "onednn", data_parallel.put_state(variables),
        data_parallel.put_batch({"image": np.asarray(images), "label": np.asarray(labels)}))
    got = data_parallel.get_state(got)
    want = jax.jit(functools.partial(gradients, _resnet("xla")))(variables, images, labels)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-5)
    jax.tree.map(lambda g, r: np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5),
                 (got["grads"], got["batch_stats"]), (want["grads"], want["batch_stats"]))


def test_onednn_under_vmap_equals_lax():
    # per-example convolutions (e.g. per-example gradients): one FFI call per example
    rng = np.random.default_rng(7)
    x = normal(rng, (3, 2, 6, 6, 4))
    w = normal(rng, (3, 3, 3, 4, 5), 0.3)
    kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=DN)
    got = jax.jit(jax.vmap(lambda x, w: ONEDNN(x, w, **kw)))(x, w)
    want = jax.vmap(lambda x, w: lax.conv_general_dilated(x, w, **kw))(x, w)
    np.testing.assert_allclose(got, want, **TOL)


def test_auto_uses_onednn_on_the_cpu():
    x, w, rng = inputs(6, (8, 8), (3, 3), 4, 6, 1)
    conv = conv_general_dilated_for("auto")
    check(conv, x, w, rng, window_strides=(1, 1), padding="SAME", dimension_numbers=DN)
    hlo = jax.jit(lambda x, w: conv(x, w, (1, 1), "SAME", dimension_numbers=DN)).lower(
        x, w).as_text()
    assert onednn_build.TARGET_PREFIX + "forward" in hlo
