"""Numeric proof: weights converted by `caffeport.convert` reproduce Caffe in Keras 3.

For each caffe-reference model a Keras functional model is written by hand to
mirror its deploy.prototxt (channels_last, Keras layer names = Caffe layer
names), the converted legacy HDF5 file is loaded with ``by_name=True`` and every
per-layer output Caffe recorded (outputs_per_layer.npz) is compared at a
relative error of 1e-4. The MTCNN nets (trained weights, no Caffe outputs) are
compared with the numpy Caffe forward of reference_nets.py, itself checked
against Caffe in test_caffe_numpy_reference.py.

``load_weights(by_name=True)`` silently skips layers the file lacks, so every
load here goes through `load_checked`, which fails on any weighted Keras layer
the file does not fill. The negative controls at the end load deliberately
wrong layouts (no flatten reorder, undivided BatchNorm statistics, wrong eps,
Caffe's LSTM gate order) and require a large error: they prove the comparisons
can fail.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import h5py
import keras
import numpy as np
import pytest
from keras import layers

import caffeport
from tests.proof.reference_nets import (
    B_RESNET_EPS,
    MTCNN_MODELS,
    REFERENCE_MODELS,
    RTOL,
    add_split_copies,
    assert_all_close,
    caffe_forward,
    caffe_pool_size,
    model_files,
    mtcnn_input,
    reference_inputs,
    reference_outputs,
    rel_error,
    stream_segments,
    to_nchw,
    to_nhwc,
)

#: a negative control must miss by at least this much (relative error)
CONTROL_MIN_ERROR = 1e-2


class Converted(Protocol):
    """The parts of caffeport's ConvertResult these tests use."""

    @property
    def batchnorm_eps(self) -> dict[str, float]: ...

    @property
    def name_map(self) -> dict[str, str]: ...


# ---------------------------------------------------------------- custom layers


class NegInfPadding2D(layers.Layer):
    """Pads H and W with -inf: Caffe's max pooling never picks its padding (ZeroPadding2D would)."""

    def __init__(self, padding: tuple[tuple[int, int], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = padding

    def call(self, x: Any) -> Any:
        (top, bottom), (left, right) = self.padding
        return keras.ops.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=-np.inf)


class ChannelScale(layers.Layer):
    """Caffe's Scale over the last (channel) axis: weights [scale (C,)] or [scale, bias]."""

    def __init__(self, bias_term: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bias_term = bias_term

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = int(input_shape[-1])  # type: ignore[arg-type]
        self.scale = self.add_weight(shape=(channels,), initializer="ones", name="scale")
        if self.bias_term:
            self.bias = self.add_weight(shape=(channels,), initializer="zeros", name="bias")

    def call(self, x: Any) -> Any:
        y = x * self.scale
        return y + self.bias if self.bias_term else y


class ChannelBias(layers.Layer):
    """Caffe's Bias (and the Embed bias) over the last axis: weights [bias (C,)]."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.bias = self.add_weight(shape=(int(input_shape[-1]),), initializer="zeros", name="bias")  # type: ignore[arg-type]

    def call(self, x: Any) -> Any:
        return x + self.bias


# ---------------------------------------------------------------- Caffe layers in Keras


def conv(x: Any, name: str, filters: int, kernel: int, stride: int = 1, pad: int = 0, **kwargs: Any) -> Any:
    """Convolution: Caffe's symmetric zero padding, then a 'valid' Conv2D."""
    if pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding="valid", name=name, **kwargs)(x)


def max_pool(x: Any, name: str, kernel: int, stride: int, pad: int = 0) -> Any:
    """Caffe MAX pooling (output size rounded up): -inf padding on the bottom/right as needed."""
    height, width = int(x.shape[1]), int(x.shape[2])
    out_h, out_w = caffe_pool_size(height, kernel, stride, pad), caffe_pool_size(width, kernel, stride, pad)
    extra_h = max((out_h - 1) * stride + kernel - height - 2 * pad, 0)
    extra_w = max((out_w - 1) * stride + kernel - width - 2 * pad, 0)
    if pad or extra_h or extra_w:
        x = NegInfPadding2D(((pad, pad + extra_h), (pad, pad + extra_w)), name=f"{name}_pad")(x)
    y = layers.MaxPooling2D(kernel, stride, padding="valid", name=name)(x)
    assert tuple(y.shape[1:3]) == (out_h, out_w), f"{name}: Keras pools to {y.shape[1:3]}, Caffe to {(out_h, out_w)}"
    return y


def inner_product(x: Any, name: str, units: int) -> Any:
    """InnerProduct (axis 1): flatten a 4-D blob channels-last first."""
    if len(x.shape) > 2:
        x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(units, name=name)(x)


def prelu(x: Any, name: str, channel_shared: bool = False) -> Any:
    if len(x.shape) == 4:
        return layers.PReLU(shared_axes=[1, 2, 3] if channel_shared else [1, 2], name=name)(x)
    return layers.PReLU(name=name)(x)


class Mirror(NamedTuple):
    """A Keras model mirroring a Caffe net.

    ``model`` maps ``<layer>__<top>`` to its output. ``bn_alone`` lists the outputs
    a fused BatchNormalization cannot give, Caffe's BatchNorm before its Scale:
    ``<bn>__<top>`` -> (Keras BatchNormalization name, key of its input).
    """

    model: keras.Model
    bn_alone: dict[str, tuple[str, str]]


# ---------------------------------------------------------------- mirrors of the reference models


def keras_a_lenet(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((28, 28, 1), name="data")
    conv1 = conv(data, "conv1", 20, 5)
    pool1 = max_pool(conv1, "pool1", 2, 2)
    conv2 = conv(pool1, "conv2", 50, 5)
    pool2 = max_pool(conv2, "pool2", 2, 2)
    ip1 = inner_product(pool2, "ip1", 500)
    relu1 = layers.ReLU(name="relu1")(ip1)
    ip2 = inner_product(relu1, "ip2", 10)
    prob = layers.Softmax(name="prob")(ip2)
    outputs = {
        "data__data": layers.Identity(name="data_copy")(data),
        "conv1__conv1": conv1,
        "pool1__pool1": pool1,
        "conv2__conv2": conv2,
        "pool2__pool2": pool2,
        "ip1__ip1": ip1,
        "relu1__ip1": relu1,
        "ip2__ip2": ip2,
        "prob__prob": prob,
    }
    return Mirror(keras.Model(data, outputs, name="a_lenet"), {})


def keras_b_resnet_block(eps: Mapping[str, float]) -> Mirror:
    outputs: dict[str, Any] = {}
    bn_alone: dict[str, tuple[str, str]] = {}

    def conv_bn(x: Any, conv_name: str, filters: int, kernel: int, stride: int, pad: int) -> Any:
        """Convolution (no bias) + BatchNorm + Scale, all in place on the blob named after the conv."""
        y = conv(x, conv_name, filters, kernel, stride, pad, use_bias=False)
        outputs[f"{conv_name}__{conv_name}"] = y
        bn_name = f"bn_{conv_name}"
        y = layers.BatchNormalization(epsilon=eps[bn_name], name=bn_name)(y)
        outputs[f"scale_{conv_name}__{conv_name}"] = y
        bn_alone[f"{bn_name}__{conv_name}"] = (bn_name, f"{conv_name}__{conv_name}")
        return y

    data = keras.Input((32, 32, 3), name="data")
    outputs["data__data"] = layers.Identity(name="data_copy")(data)
    conv0 = layers.ReLU(name="relu_conv0")(conv_bn(data, "conv0", 16, 3, 1, 1))
    outputs["relu_conv0__conv0"] = conv0
    res1_a = layers.ReLU(name="relu_res1_a")(conv_bn(conv0, "res1_a", 16, 3, 1, 1))
    outputs["relu_res1_a__res1_a"] = res1_a
    res1_b = conv_bn(res1_a, "res1_b", 16, 3, 1, 1)
    res1 = layers.Add(name="res1")([conv0, res1_b])
    outputs["res1__res1"] = res1
    res1 = layers.ReLU(name="res1_relu")(res1)
    outputs["res1_relu__res1"] = res1
    res2_a = layers.ReLU(name="relu_res2_a")(conv_bn(res1, "res2_a", 32, 3, 2, 1))
    outputs["relu_res2_a__res2_a"] = res2_a
    res2_b = conv_bn(res2_a, "res2_b", 32, 3, 1, 1)
    res2_proj = conv_bn(res1, "res2_proj", 32, 1, 2, 0)
    res2 = layers.Add(name="res2")([res2_proj, res2_b])
    outputs["res2__res2"] = res2
    res2 = layers.ReLU(name="res2_relu")(res2)
    outputs["res2_relu__res2"] = res2
    pool = layers.GlobalAveragePooling2D(keepdims=True, name="pool")(res2)
    outputs["pool__pool"] = pool
    fc = inner_product(pool, "fc", 10)
    outputs["fc__fc"] = fc
    outputs["prob__prob"] = layers.Softmax(name="prob")(fc)
    return Mirror(keras.Model(data, outputs, name="b_resnet_block"), bn_alone)


def keras_c_deconv_prelu(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((16, 16, 3), name="data")
    conv1 = conv(data, "conv1", 8, 3, pad=1)
    prelu1 = prelu(conv1, "prelu1")
    conv2 = conv(prelu1, "conv2", 8, 3, pad=1)
    prelu2 = prelu(conv2, "prelu2", channel_shared=True)
    deconv = layers.Conv2DTranspose(4, 4, strides=2, padding="valid", name="deconv")(prelu2)
    deconv = layers.Cropping2D(1, name="deconv_crop")(deconv)  # Caffe's pad 1 trims the full output
    outputs = {
        "data__data": layers.Identity(name="data_copy")(data),
        "conv1__conv1": conv1,
        "prelu1__prelu1": prelu1,
        "conv2__conv2": conv2,
        "prelu2__conv2": prelu2,
        "deconv__deconv": deconv,
    }
    return Mirror(keras.Model(data, outputs, name="c_deconv_prelu"), {})


def keras_d_grouped(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((12, 12, 4), name="data")
    conv_g2 = conv(data, "conv_g2", 8, 3, pad=1, groups=2)
    padded = layers.ZeroPadding2D(1, name="conv_dw_pad")(conv_g2)
    conv_dw = layers.DepthwiseConv2D(3, strides=2, padding="valid", name="conv_dw")(padded)
    scale = ChannelScale(False, name="scale")(conv_dw)
    bias = ChannelBias(name="bias")(scale)
    scale_b = ChannelScale(True, name="scale_b")(bias)
    relu = layers.ReLU(name="relu")(scale_b)
    conv_pw = conv(relu, "conv_pw", 6, 1)
    outputs = {
        "data__data": layers.Identity(name="data_copy")(data),
        "conv_g2__conv_g2": conv_g2,
        "conv_dw__conv_dw": conv_dw,
        "scale__scale": scale,
        "bias__bias": bias,
        "scale_b__scale_b": scale_b,
        "relu__relu": relu,
        "conv_pw__conv_pw": conv_pw,
    }
    return Mirror(keras.Model(data, outputs, name="d_grouped"), {})


def keras_e_recurrent(eps: Mapping[str, float]) -> Mirror:
    """One stream, batch-major: (1, L) token ids -> (1, L, F). Caffe's time-major streams and
    its ``cont`` resets are handled by running each stream segment by segment (`run_recurrent`)."""
    data = keras.Input((None,), dtype="int32", name="data")
    embed = layers.Embedding(20, 8, name="embed")(data)
    embed = ChannelBias(name="embed_bias")(embed)
    lstm = layers.LSTM(16, return_sequences=True, name="lstm")(embed)
    ip = layers.Dense(5, name="ip")(lstm)  # InnerProduct axis 2: per time step and stream
    return Mirror(keras.Model(data, {"embed__embed": embed, "lstm__lstm": lstm, "ip__ip": ip}, name="e_recurrent"), {})


# ---------------------------------------------------------------- mirrors of the MTCNN nets


def keras_det1(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((12, 12, 3), name="data")
    out: dict[str, Any] = {}
    x = out["conv1__conv1"] = conv(data, "conv1", 10, 3)
    x = out["PReLU1__conv1"] = prelu(x, "PReLU1")
    x = out["pool1__pool1"] = max_pool(x, "pool1", 2, 2)
    x = out["conv2__conv2"] = conv(x, "conv2", 16, 3)
    x = out["PReLU2__conv2"] = prelu(x, "PReLU2")
    x = out["conv3__conv3"] = conv(x, "conv3", 32, 3)
    x = out["PReLU3__conv3"] = prelu(x, "PReLU3")
    out["conv4-1__conv4-1"] = conv(x, "conv4-1", 2, 1)
    out["conv4-2__conv4-2"] = conv(x, "conv4-2", 4, 1)
    out["prob1__prob1"] = layers.Softmax(name="prob1")(out["conv4-1__conv4-1"])
    return Mirror(keras.Model(data, out, name="det1"), {})


def keras_det2(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((24, 24, 3), name="data")
    out: dict[str, Any] = {}
    x = out["conv1__conv1"] = conv(data, "conv1", 28, 3)
    x = out["prelu1__conv1"] = prelu(x, "prelu1")
    x = out["pool1__pool1"] = max_pool(x, "pool1", 3, 2)  # 22 -> 11: Caffe rounds up
    x = out["conv2__conv2"] = conv(x, "conv2", 48, 3)
    x = out["prelu2__conv2"] = prelu(x, "prelu2")
    x = out["pool2__pool2"] = max_pool(x, "pool2", 3, 2)
    x = out["conv3__conv3"] = conv(x, "conv3", 64, 2)
    x = out["prelu3__conv3"] = prelu(x, "prelu3")
    x = out["conv4__conv4"] = inner_product(x, "conv4", 128)
    x = out["prelu4__conv4"] = prelu(x, "prelu4")
    out["conv5-1__conv5-1"] = inner_product(x, "conv5-1", 2)
    out["conv5-2__conv5-2"] = inner_product(x, "conv5-2", 4)
    out["prob1__prob1"] = layers.Softmax(name="prob1")(out["conv5-1__conv5-1"])
    return Mirror(keras.Model(data, out, name="det2"), {})


def keras_det3(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((48, 48, 3), name="data")
    out: dict[str, Any] = {}
    x = out["conv1__conv1"] = conv(data, "conv1", 32, 3)
    x = out["prelu1__conv1"] = prelu(x, "prelu1")
    x = out["pool1__pool1"] = max_pool(x, "pool1", 3, 2)  # 46 -> 23: Caffe rounds up
    x = out["conv2__conv2"] = conv(x, "conv2", 64, 3)
    x = out["prelu2__conv2"] = prelu(x, "prelu2")
    x = out["pool2__pool2"] = max_pool(x, "pool2", 3, 2)
    x = out["conv3__conv3"] = conv(x, "conv3", 64, 3)
    x = out["prelu3__conv3"] = prelu(x, "prelu3")
    x = out["pool3__pool3"] = max_pool(x, "pool3", 2, 2)
    x = out["conv4__conv4"] = conv(x, "conv4", 128, 2)
    x = out["prelu4__conv4"] = prelu(x, "prelu4")
    x = out["conv5__conv5"] = inner_product(x, "conv5", 256)
    x = out["drop5__conv5"] = layers.Dropout(0.25, name="drop5")(x)
    x = out["prelu5__conv5"] = prelu(x, "prelu5")
    out["conv6-1__conv6-1"] = inner_product(x, "conv6-1", 2)
    out["conv6-2__conv6-2"] = inner_product(x, "conv6-2", 4)
    out["conv6-3__conv6-3"] = inner_product(x, "conv6-3", 10)
    out["prob1__prob1"] = layers.Softmax(name="prob1")(out["conv6-1__conv6-1"])
    return Mirror(keras.Model(data, out, name="det3"), {})


def keras_det4(eps: Mapping[str, float]) -> Mirror:
    data = keras.Input((24, 24, 15), name="data")
    out: dict[str, Any] = {}
    branches = []
    for i in range(1, 6):
        lo = 3 * (i - 1)
        x = layers.Lambda(lambda t, lo=lo: t[..., lo : lo + 3], name=f"slicer_data_{i}")(data)
        out[f"slicer_data__data24{i}"] = x
        x = out[f"conv1_{i}__conv1_{i}"] = conv(x, f"conv1_{i}", 28, 3)
        x = out[f"prelu1_{i}__conv1_{i}"] = prelu(x, f"prelu1_{i}")
        x = out[f"pool1_{i}__pool1_{i}"] = max_pool(x, f"pool1_{i}", 3, 2)
        x = out[f"conv2_{i}__conv2_{i}"] = conv(x, f"conv2_{i}", 48, 3)
        x = out[f"prelu2_{i}__conv2_{i}"] = prelu(x, f"prelu2_{i}")
        x = out[f"pool2_{i}__pool2_{i}"] = max_pool(x, f"pool2_{i}", 3, 2)
        x = out[f"conv3_{i}__conv3_{i}"] = conv(x, f"conv3_{i}", 64, 2)
        x = out[f"prelu3_{i}__conv3_{i}"] = prelu(x, f"prelu3_{i}")
        branches.append(x)
    x = out["concat__conv3"] = layers.Concatenate(axis=-1, name="concat")(branches)
    x = out["fc4__fc4"] = inner_product(x, "fc4", 256)
    fc4 = out["prelu4__fc4"] = prelu(x, "prelu4")
    for j in range(1, 6):
        x = out[f"fc4_{j}__fc4_{j}"] = inner_product(fc4, f"fc4_{j}", 64)
        x = out[f"prelu4_{j}__fc4_{j}"] = prelu(x, f"prelu4_{j}")
        out[f"fc5_{j}__fc5_{j}"] = inner_product(x, f"fc5_{j}", 2)
    return Mirror(keras.Model(data, out, name="det4"), {})


BUILDERS: dict[str, Callable[[Mapping[str, float]], Mirror]] = {
    "a_lenet": keras_a_lenet,
    "b_resnet_block": keras_b_resnet_block,
    "c_deconv_prelu": keras_c_deconv_prelu,
    "d_grouped": keras_d_grouped,
    "e_recurrent": keras_e_recurrent,
    "det1": keras_det1,
    "det2": keras_det2,
    "det3": keras_det3,
    "det4": keras_det4,
}


# ---------------------------------------------------------------- loading, checked


def _text(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def h5_layer_weights(path: Path) -> dict[str, list[np.ndarray]]:
    """The legacy Keras HDF5 file as Keras reads it: ``layer_names`` -> datasets in ``weight_names`` order."""
    with h5py.File(path, "r") as f:
        assert "layer_names" in f.attrs, f"{path.name} has no root attribute layer_names: Keras would load nothing"
        groups = {}
        for name in (_text(n) for n in f.attrs["layer_names"]):
            assert name in f, f"{path.name}: layer_names lists {name!r} but there is no such group"
            group = f[name]
            groups[name] = [np.asarray(group[_text(w)]) for w in group.attrs.get("weight_names", [])]
    return groups


def load_checked(model: keras.Model, path: Path) -> None:
    """``model.load_weights(path, by_name=True)``, failing on every layer it would silently skip.

    Before loading: each Keras layer with weights has a group with the same number of arrays of
    the same shapes, and each weighted group has a Keras layer. After loading: every weight is
    exactly the file's, and no layer still holds its fresh initial values.
    """
    in_file = {name: arrays for name, arrays in h5_layer_weights(path).items() if arrays}
    weighted = {layer.name: layer for layer in model.layers if layer.weights}
    fresh = {name: layer.get_weights() for name, layer in weighted.items()}
    missing = sorted(set(weighted) - set(in_file))
    assert not missing, (
        f"Keras layers with weights that {path.name} has no weights for: {missing} "
        "(load_weights(by_name=True) would leave them at their initial values without a word)"
    )
    unclaimed = sorted(set(in_file) - set(weighted))
    assert not unclaimed, f"weight groups in {path.name} that no layer of the mirror model takes: {unclaimed}"
    for name in weighted:
        want = [w.shape for w in fresh[name]]
        have = [a.shape for a in in_file[name]]
        assert have == want, f"{name}: the file holds arrays of shapes {have}, the Keras layer wants {want}"
    model.load_weights(str(path), by_name=True)
    for name, layer in weighted.items():
        loaded = layer.get_weights()
        for i, (got, stored) in enumerate(zip(loaded, in_file[name])):
            np.testing.assert_array_equal(got, stored, err_msg=f"{name}: weight {i} differs from the file's")
        assert any(not np.array_equal(a, b) for a, b in zip(loaded, fresh[name])), (
            f"{name}: still holds its initial values after load_weights"
        )


# ---------------------------------------------------------------- running


def run_mirror(mirror: Mirror, inputs_nchw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed NCHW inputs, return every output NCHW, plus the BatchNorm-before-Scale values."""
    feed = {name: to_nhwc(np.asarray(v, dtype=np.float32)) for name, v in inputs_nchw.items()}
    x = feed["data"] if len(feed) == 1 else feed
    raw = mirror.model(x, training=False)
    got = {key: to_nchw(keras.ops.convert_to_numpy(value)) for key, value in raw.items()}
    for key, (bn_name, input_key) in mirror.bn_alone.items():
        bn = mirror.model.get_layer(bn_name)
        mean, var = (w.reshape(1, -1, 1, 1) for w in bn.get_weights()[-2:])  # moving_mean, moving_variance
        got[key] = (got[input_key] - mean) / np.sqrt(var + bn.epsilon)
    return got


def run_recurrent(mirror: Mirror, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Caffe's (T, N) streams through the batch-major Keras model, restarting the state where cont == 0."""
    ids = inputs["data"].astype(np.int32)
    steps, streams = ids.shape
    got: dict[str, np.ndarray] = {"data__data": inputs["data"], "cont__cont": inputs["cont"]}
    for n, segments in enumerate(stream_segments(inputs["cont"])):
        for start, stop in segments:
            raw = mirror.model(ids[start:stop, n][None, :], training=False)
            for key, value in raw.items():
                value = keras.ops.convert_to_numpy(value)[0]
                got.setdefault(key, np.zeros((steps, streams, value.shape[-1]), np.float32))[start:stop, n] = value
    return got


def keras_outputs(name: str, mirror: Mirror) -> dict[str, np.ndarray]:
    inputs = reference_inputs(name)
    if name == "e_recurrent":
        return run_recurrent(mirror, inputs)
    return run_mirror(mirror, inputs)


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Converted, Path]]:
    """Convert a model once per module: name -> (result, path of the .h5 file)."""
    cache: dict[str, tuple[Converted, Path]] = {}

    def get(name: str) -> tuple[Converted, Path]:
        if name not in cache:
            caffemodel, prototxt = model_files(name)
            path = tmp_path_factory.mktemp(name) / "w.h5"
            result = caffeport.convert(caffemodel, prototxt, output=path)
            assert path.is_file(), f"convert wrote no file at {path}"
            cache[name] = (result, path)
        return cache[name]

    return get


def build_loaded(name: str, converted: Callable[[str], tuple[Converted, Path]]) -> Mirror:
    result, path = converted(name)
    net = caffeport.read(*model_files(name))
    for layer in net:
        if layer.blobs:
            file_name = result.name_map.get(layer.name, layer.name)  # name_map may list only renamed layers
            assert file_name == layer.name, f"{layer.name}: written as {file_name!r}; the mirror uses the Caffe name"
    mirror = BUILDERS[name](result.batchnorm_eps)
    load_checked(mirror.model, path)
    return mirror


# ---------------------------------------------------------------- the proofs


@pytest.mark.parametrize("name", REFERENCE_MODELS)
def test_keras_reproduces_caffe(name: str, converted: Callable[[str], tuple[Converted, Path]]) -> None:
    mirror = build_loaded(name, converted)
    expected = reference_outputs(name)
    got = keras_outputs(name, mirror)
    add_split_copies(got, expected)
    assert_all_close(got, expected)


def test_batchnorm_eps_is_carried(converted: Callable[[str], tuple[Converted, Path]]) -> None:
    result, _ = converted("b_resnet_block")
    assert result.batchnorm_eps == pytest.approx(B_RESNET_EPS, rel=1e-6)


@pytest.mark.parametrize("name", MTCNN_MODELS)
def test_keras_mtcnn_matches_numpy_caffe(name: str, converted: Callable[[str], tuple[Converted, Path]]) -> None:
    mirror = build_loaded(name, converted)
    net = caffeport.read(*model_files(name))
    inputs = mtcnn_input(net)
    expected = caffe_forward(net, inputs)
    assert_all_close(run_mirror(mirror, inputs), expected)


# ---------------------------------------------------------------- the check and the comparisons can fail


def test_load_check_catches_a_missing_group(converted: Callable[[str], tuple[Converted, Path]], tmp_path: Path) -> None:
    """A file without conv2's group loads 'fine' with by_name=True; load_checked must refuse it."""
    _, path = converted("a_lenet")
    partial = tmp_path / "partial.h5"
    with h5py.File(path, "r") as src, h5py.File(partial, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        names = [n for n in src.attrs["layer_names"] if _text(n) != "conv2"]
        dst.attrs["layer_names"] = names
        for n in names:
            src.copy(src[_text(n)], dst, name=_text(n))
    mirror = keras_a_lenet({})
    mirror.model.load_weights(str(partial), by_name=True)  # Keras itself says nothing
    with pytest.raises(AssertionError, match="conv2"):
        load_checked(keras_a_lenet({}).model, partial)


def _blobs(name: str, layer: str) -> list[np.ndarray]:
    """Raw Caffe-layout blobs of one layer, from caffeport.read (no transform)."""
    return [np.asarray(b, dtype=np.float32) for b in caffeport.read(*model_files(name)).layer(layer).blobs]


def test_control_dense_without_flatten_reorder(converted: Callable[[str], tuple[Converted, Path]]) -> None:
    """ip1 flattens conv features: a plain W.T (Caffe's C, H, W column order) must break the match."""
    mirror = build_loaded("a_lenet", converted)
    expected = reference_outputs("a_lenet")
    assert rel_error(keras_outputs("a_lenet", mirror)["ip1__ip1"], expected["ip1__ip1"]) <= RTOL
    weight, bias = _blobs("a_lenet", "ip1")
    mirror.model.get_layer("ip1").set_weights([weight.T, bias])
    got = keras_outputs("a_lenet", mirror)
    for key in ("ip1__ip1", "ip2__ip2"):
        assert rel_error(got[key], expected[key]) > CONTROL_MIN_ERROR, f"{key} did not notice the missing reorder"


def test_control_batchnorm_without_scale_factor(converted: Callable[[str], tuple[Converted, Path]]) -> None:
    """BatchNorm statistics not divided by the stored factor (123.4 or 0.75) must break every BN output."""
    mirror = build_loaded("b_resnet_block", converted)
    expected = reference_outputs("b_resnet_block")
    for bn_name in B_RESNET_EPS:
        bn = mirror.model.get_layer(bn_name)
        gamma, beta, _, _ = bn.get_weights()
        mean_s, var_s, _ = _blobs("b_resnet_block", bn_name)
        bn.set_weights([gamma, beta, mean_s, var_s])
    got = keras_outputs("b_resnet_block", mirror)
    for bn_name in B_RESNET_EPS:
        key = f"{bn_name}__{bn_name.removeprefix('bn_')}"
        assert rel_error(got[key], expected[key]) > CONTROL_MIN_ERROR, f"{key} did not notice undivided statistics"


def test_control_batchnorm_with_keras_default_eps(converted: Callable[[str], tuple[Converted, Path]]) -> None:
    """Keras' default eps 1e-3 where Caffe used 1e-5 (and 1e-5 where Caffe used 1e-3) must show."""
    _, path = converted("b_resnet_block")
    expected = reference_outputs("b_resnet_block")
    swapped = {name: 1e-5 if eps == 1e-3 else 1e-3 for name, eps in B_RESNET_EPS.items()}
    mirror = keras_b_resnet_block(swapped)
    load_checked(mirror.model, path)
    got = keras_outputs("b_resnet_block", mirror)
    errors = {name: rel_error(got[f"{name}__{name[3:]}"], expected[f"{name}__{name[3:]}"]) for name in swapped}
    assert all(err > 5 * RTOL for err in errors.values()), f"eps mismatch went unnoticed: {errors}"


def test_control_lstm_in_caffe_gate_order(converted: Callable[[str], tuple[Converted, Path]]) -> None:
    """Caffe's i, f, o, g gate blocks loaded as Keras' i, f, c, o must break the LSTM output."""
    mirror = build_loaded("e_recurrent", converted)
    expected = reference_outputs("e_recurrent")
    w_xc, b_c, w_hc = _blobs("e_recurrent", "lstm")
    mirror.model.get_layer("lstm").set_weights([w_xc.T, w_hc.T, b_c])
    got = keras_outputs("e_recurrent", mirror)
    for key in ("lstm__lstm", "ip__ip"):
        assert rel_error(got[key], expected[key]) > CONTROL_MIN_ERROR, f"{key} did not notice the gate order"
