"""The flax format (caffeport/exporters/flax.py, backend tensorflow), checked with Flax itself.

``flax.serialization.msgpack_restore`` gives exactly the variables of a Flax linen mirror of each caffe-reference
net (same tree and shapes as the mirror's own ``init``), holding the tensorflow backend's Keras-layout blobs under
the names Flax's modules give them (`KERAS_TO_FLAX`, written from Flax's documentation); the bytes are exactly
what ``msgpack_serialize`` makes of those variables; and the mirrors, given the restored variables, reproduce
Caffe's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import caffeport
from caffeport.errors import ModelStructureError
from caffeport.exporters import flax as flax_format
from caffeport.ir import Net
from tests.exporters.format_helpers import (
    ODD_CHUNK_BYTES,
    REFERENCE,
    as_written,
    assert_widened_to_float32,
    caffe_inputs,
    caffe_outputs,
    convert_reference,
    duplicate_names_net,
    little_endian,
    odd_net,
    reference_files,
    same_bits,
    segfree_fp16,
    use_chunk_bytes,
    write_with,
)
from tests.proof.reference_nets import B_RESNET_EPS, RTOL, assert_close, to_nchw, to_nhwc


def _crop(x: jax.Array, pad: int) -> jax.Array:
    return x[:, pad:-pad, pad:-pad, :] if pad else x


class _ChannelPReLU(fnn.Module):
    """A per-channel PReLU: ``negative_slope`` in Keras' alpha shape (1, 1, C)."""

    channels: int

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param("negative_slope", fnn.initializers.zeros, (1, 1, self.channels))
        return jnp.where(x >= 0, x, slope * x)


class _Affine(fnn.Module):
    """Caffe's Scale (``scale``, optional ``bias``) or Bias (``bias`` only) over the last axis."""

    channels: int
    scale: bool
    bias: bool

    @fnn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.scale:
            x = x * self.param("scale", fnn.initializers.ones, (self.channels,))
        if self.bias:
            x = x + self.param("bias", fnn.initializers.zeros, (self.channels,))
        return x


def _same(pad: int) -> list[tuple[int, int]]:
    return [(pad, pad), (pad, pad)]


class _FlaxLenet(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["conv1__conv1"] = fnn.Conv(20, (5, 5), padding="VALID", name="conv1")(data)
        x = out["pool1__pool1"] = fnn.max_pool(x, (2, 2), (2, 2))
        x = out["conv2__conv2"] = fnn.Conv(50, (5, 5), padding="VALID", name="conv2")(x)
        x = out["pool2__pool2"] = fnn.max_pool(x, (2, 2), (2, 2))
        x = out["ip1__ip1"] = fnn.Dense(500, name="ip1")(x.reshape(x.shape[0], -1))  # NHWC flatten
        x = out["ip2__ip2"] = fnn.Dense(10, name="ip2")(fnn.relu(x))
        out["prob__prob"] = jax.nn.softmax(x, axis=-1)
        return out


class _FlaxResnetBlock(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}

        def conv_bn(x: jax.Array, name: str, features: int, kernel: int, stride: int) -> jax.Array:
            x = fnn.Conv(features, (kernel, kernel), (stride, stride), padding=_same(kernel // 2), use_bias=False,
                         name=name)(x)
            bn = fnn.BatchNorm(use_running_average=True, epsilon=B_RESNET_EPS[f"bn_{name}"], name=f"bn_{name}")
            out[f"scale_{name}__{name}"] = y = bn(x)
            return y

        conv0 = fnn.relu(conv_bn(data, "conv0", 16, 3, 1))
        x = fnn.relu(conv_bn(conv0, "res1_a", 16, 3, 1))
        res1 = out["res1_relu__res1"] = fnn.relu(conv0 + conv_bn(x, "res1_b", 16, 3, 1))
        x = fnn.relu(conv_bn(res1, "res2_a", 32, 3, 2))
        x = conv_bn(res1, "res2_proj", 32, 1, 2) + conv_bn(x, "res2_b", 32, 3, 1)
        x = out["res2_relu__res2"] = fnn.relu(x)
        x = out["fc__fc"] = fnn.Dense(10, name="fc")(jnp.mean(x, axis=(1, 2)))
        out["prob__prob"] = jax.nn.softmax(x, axis=-1)
        return out


class _FlaxDeconvPrelu(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["conv1__conv1"] = fnn.Conv(8, (3, 3), padding=_same(1), name="conv1")(data)
        x = out["prelu1__prelu1"] = _ChannelPReLU(8, name="prelu1")(x)
        x = out["conv2__conv2"] = fnn.Conv(8, (3, 3), padding=_same(1), name="conv2")(x)
        x = out["prelu2__conv2"] = fnn.PReLU(name="prelu2")(x)  # channel_shared: Flax's own scalar PReLU
        deconv = fnn.ConvTranspose(4, (4, 4), (2, 2), padding="VALID", transpose_kernel=True, name="deconv")
        out["deconv__deconv"] = _crop(deconv(x), 1)
        return out


class _FlaxGrouped(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = out["conv_g2__conv_g2"] = fnn.Conv(8, (3, 3), padding=_same(1), feature_group_count=2,
                                               name="conv_g2")(data)
        x = out["conv_dw__conv_dw"] = fnn.Conv(8, (3, 3), (2, 2), padding=_same(1), feature_group_count=8,
                                               name="conv_dw")(x)
        x = out["scale__scale"] = _Affine(8, scale=True, bias=False, name="scale")(x)
        x = out["bias__bias"] = _Affine(8, scale=False, bias=True, name="bias")(x)
        x = out["scale_b__scale_b"] = _Affine(8, scale=True, bias=True, name="scale_b")(x)
        x = out["relu__relu"] = fnn.relu(x)
        out["conv_pw__conv_pw"] = fnn.Conv(6, (1, 1), name="conv_pw")(x)
        return out


class _FlaxRecurrent(fnn.Module):
    @fnn.compact
    def __call__(self, data: jax.Array, cont: jax.Array) -> dict[str, jax.Array]:
        out = {}
        x = fnn.Embed(20, 8, name="embed")(data.astype(jnp.int32))
        x = out["embed__embed"] = _Affine(8, scale=False, bias=True, name="embed_bias")(x)
        cell = fnn.LSTMCell(16, name="lstm")
        c = h = jnp.zeros((data.shape[1], 16))
        hs = []
        for t in range(data.shape[0]):
            keep = cont[t][:, None]  # cont == 0 starts the stream afresh
            (c, h), y = cell((c * keep, h * keep), x[t])
            hs.append(y)
        x = out["lstm__lstm"] = jnp.stack(hs)
        out["ip__ip"] = fnn.Dense(5, name="ip")(x)
        return out


FLAX_MIRRORS: dict[str, Callable[[], fnn.Module]] = {
    "a_lenet": _FlaxLenet, "a_lenet_v1": _FlaxLenet, "b_resnet_block": _FlaxResnetBlock,
    "c_deconv_prelu": _FlaxDeconvPrelu, "d_grouped": _FlaxGrouped, "e_recurrent": _FlaxRecurrent,
}


def _flax_variables(name: str) -> dict[str, Any]:
    """The mirror's own ``init`` variables (any values): the tree and shapes Flax expects, ``batch_stats`` always."""
    inputs = [jnp.asarray(to_nhwc(v)) for v in caffe_inputs(name).values()]
    return {"batch_stats": {}, **FLAX_MIRRORS[name]().init(jax.random.PRNGKey(0), *inputs)}


def _leaf_shapes(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], tuple[int, ...]]:
    shapes: dict[tuple[str, ...], tuple[int, ...]] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            shapes |= _leaf_shapes(value, (*prefix, key))
        else:
            shapes[(*prefix, key)] = tuple(np.shape(value))
    return shapes


#: (Keras layer class, Keras weight name) -> (Flax collection, Flax variable name), from the documentation of the
#: Flax linen module that computes what the Keras layer computes (flax.linen API reference):
#: nn.Conv, nn.ConvTranspose and nn.Dense have params ``kernel`` and ``bias``; a depthwise convolution is an
#: nn.Conv with ``feature_group_count`` = channels; nn.BatchNorm has params ``scale``, ``bias`` and batch_stats
#: ``mean``, ``var``; nn.Embed has ``embedding``; nn.PReLU has ``negative_slope``. Scale and Bias (Caffe's) are
#: this file's `_Affine` modules, whose params are ``scale`` and ``bias``.
KERAS_TO_FLAX: dict[tuple[str, str], tuple[str, str]] = {
    ("Conv2D", "kernel"): ("params", "kernel"),
    ("Conv2D", "bias"): ("params", "bias"),
    ("Conv2DTranspose", "kernel"): ("params", "kernel"),
    ("Conv2DTranspose", "bias"): ("params", "bias"),
    ("Dense", "kernel"): ("params", "kernel"),
    ("Dense", "bias"): ("params", "bias"),
    ("DepthwiseConv2D", "depthwise_kernel"): ("params", "kernel"),
    ("DepthwiseConv2D", "bias"): ("params", "bias"),
    ("BatchNormalization", "gamma"): ("params", "scale"),
    ("BatchNormalization", "beta"): ("params", "bias"),
    ("BatchNormalization", "moving_mean"): ("batch_stats", "mean"),
    ("BatchNormalization", "moving_variance"): ("batch_stats", "var"),
    ("Embedding", "embeddings"): ("params", "embedding"),
    ("PReLU", "alpha"): ("params", "negative_slope"),
    ("Scale", "scale"): ("params", "scale"),
    ("Scale", "bias"): ("params", "bias"),
    ("Bias", "bias"): ("params", "bias"),
}
#: Keras weights whose Flax variable holds the same elements in another shape (C order): a depthwise kernel
#: (kh, kw, C, m) is nn.Conv's (kh, kw, in / groups = 1, C * m), output channel c * m + j in both; a
#: channel-shared PReLU's alpha (1, 1, 1) is nn.PReLU's scalar negative_slope
RESHAPED = {("DepthwiseConv2D", "depthwise_kernel"), ("PReLU", "alpha")}
#: Keras' LSTM stacks its gates in 4H blocks i, f, c, o (keras.layers.LSTM); nn.LSTMCell names them i, f, g, o:
#: Dense ``i<gate>`` (kernel, no bias) on the input and ``h<gate>`` (kernel and bias) on the hidden state
KERAS_LSTM_GATES = {"i": "i", "f": "f", "c": "g", "o": "o"}


def _flax_expected(keras: Net, template: Mapping[str, Any]) -> dict[str, Any]:
    """The variables a Flax mirror with ``template``'s tree takes, filled from the Keras-layout blobs by the tables.

    Fails unless every variable of the template gets exactly one blob of its shape, and every blob a place.
    """
    shapes = _leaf_shapes(template)
    tree: dict[str, Any] = {"batch_stats": {}, "params": {}}

    def put(path: tuple[str, ...], value: np.ndarray, reshaped: bool = False) -> None:
        assert path in shapes, f"{'/'.join(path)}: not a variable of the Flax mirror"
        want = shapes[path]
        if reshaped:
            assert value.size == math.prod(want), f"{'/'.join(path)}: {value.shape} cannot become {want}"
            value = value.reshape(want)
        assert value.shape == want, f"{'/'.join(path)}: Keras blob {value.shape}, Flax variable {want}"
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        assert path[-1] not in node, f"{'/'.join(path)}: two blobs for one variable"
        node[path[-1]] = value

    for layer in keras:
        weights = {name: as_written(layer, blob) for name, blob in zip(layer.weight_names, layer.blobs)}
        if layer.framework_class == "LSTM":
            hidden = weights["recurrent_kernel"].shape[0]
            for block, gate in enumerate(KERAS_LSTM_GATES.values()):  # Keras' block order
                columns = slice(block * hidden, (block + 1) * hidden)
                put(("params", layer.name, f"i{gate}", "kernel"), weights["kernel"][:, columns])
                put(("params", layer.name, f"h{gate}", "kernel"), weights["recurrent_kernel"][:, columns])
                put(("params", layer.name, f"h{gate}", "bias"), weights["bias"][columns])
            continue
        for name, value in weights.items():
            collection, flax_name = KERAS_TO_FLAX[layer.framework_class, name]
            put((collection, layer.name, flax_name), value, (layer.framework_class, name) in RESHAPED)
    assert set(_leaf_shapes(tree)) == set(shapes), "variables of the Flax mirror no blob filled"
    return tree


def _assert_same_tree(got: Any, want: Any, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(want), f"{path}: keys {sorted(got)} != {sorted(want)}"
        for key in want:
            _assert_same_tree(got[key], want[key], f"{path}/{key}")
    else:
        same_bits(np.asarray(got), want, path)


@pytest.mark.parametrize("name", REFERENCE)
def test_flax_restores_the_keras_blobs_under_flax_names(name: str, tmp_path: Path) -> None:
    out, result = convert_reference(name, tmp_path, "flax")
    assert result.backend == "tensorflow"
    keras = caffeport.transform(caffeport.read(*reference_files(name)), "tensorflow")
    expected = _flax_expected(keras, _flax_variables(name))
    data = out.read_bytes()
    _assert_same_tree(serialization.msgpack_restore(data), expected)
    assert data == serialization.msgpack_serialize(expected), "not the bytes Flax writes for the same variables"


def test_flax_splits_big_arrays_as_flax_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flax_format, "FLAX_MAX_CHUNK_BYTES", 48)
    monkeypatch.setattr(serialization, "MAX_CHUNK_SIZE", 48)
    keras = caffeport.transform(caffeport.read(*reference_files("c_deconv_prelu")), "tensorflow")
    data = write_with(keras, tmp_path / "chunked.msgpack", "flax").read_bytes()
    assert b"__msgpack_chunked_array__" in data
    expected = _flax_expected(keras, _flax_variables("c_deconv_prelu"))
    assert data == serialization.msgpack_serialize(expected)
    _assert_same_tree(serialization.msgpack_restore(data), expected)


@pytest.mark.parametrize("name", REFERENCE)
def test_flax_variables_fit_flax_modules_that_reproduce_caffe(name: str, tmp_path: Path) -> None:
    out, _ = convert_reference(name, tmp_path, "flax")
    inputs = {k: jnp.asarray(to_nhwc(v)) for k, v in caffe_inputs(name).items()}
    model = FLAX_MIRRORS[name]()
    template = model.init(jax.random.PRNGKey(0), *inputs.values())
    variables = serialization.msgpack_restore(out.read_bytes())
    shapes = jax.tree_util.tree_map(lambda a: a.shape, {"batch_stats": {}, **template})
    assert jax.tree_util.tree_map(lambda a: a.shape, variables) == shapes, "not the variables the model expects"
    restored = serialization.from_bytes(template, out.read_bytes())  # Flax's own template-checked restore
    got = cast(dict[str, jax.Array], model.apply(restored, *inputs.values()))
    expected = caffe_outputs(name)
    for key, value in got.items():
        assert_close(key, to_nchw(np.asarray(value)), expected[key], RTOL)
    final = [k for k in expected if k.split("__")[0] in ("prob", "deconv", "conv_pw", "ip")]
    assert final and set(final) <= set(got), f"{name}: the final outputs {final} were not compared"


def _restored_leaves(path: Path) -> dict[str, np.ndarray]:
    tree = serialization.msgpack_restore(path.read_bytes())
    return {"/".join(str(k) for k in keys): np.asarray(leaf)
            for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_flax_fp16_weights_are_widened_once_a_backend_converts_them(tmp_path: Path) -> None:
    """Transforms hand over fp16 views; Flax gets float32 throughout, widened exactly."""
    model = segfree_fp16()
    out = tmp_path / "segfree.flax"
    result = caffeport.convert(model, model.with_suffix(".prototxt"), out, format="flax", backend="tensorflow")
    assert_widened_to_float32(result, _restored_leaves(out))


@pytest.mark.parametrize("chunk_bytes", ODD_CHUNK_BYTES)
def test_flax_odd_blobs_round_trip(chunk_bytes: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    use_chunk_bytes(monkeypatch, chunk_bytes)
    net = odd_net()
    tree = serialization.msgpack_restore(write_with(net, tmp_path / "odd.msgpack", "flax").read_bytes())
    for i, blob in enumerate(net.layers[0].blobs):
        same_bits(tree["params"]["odd"][str(i)], little_endian(blob), f"flax {i}")


def test_flax_refuses_duplicate_names(tmp_path: Path) -> None:
    with pytest.raises(ModelStructureError, match="'a'"):
        write_with(duplicate_names_net(), tmp_path / "dup.flax", "flax")
