"""tf_keras mirrors of the MTCNN nets, for the second venv's proof (tests/tfkeras/proof_tf_keras.py).

The same nets as tests/proof/test_keras_reference.py's Keras 3 mirrors, layer
for layer and output for output (``<layer>__<top>`` keys, channels last), built
with tf_keras: Keras 3 and tf_keras cannot share model code. Layer names are
the Caffe names, so ``load_weights(path, by_name=True)`` finds them.
``det1_misnamed_prelu`` names PNet's first PReLU ``prelu1`` (Caffe: ``PReLU1``)
for the check's negative case. Imports only numpy, tensorflow and tf_keras.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras
from tf_keras import layers

from tests.proof.reference_nets import caffe_pool_size


class NegInfPadding2D(layers.Layer):
    """Pads H and W with -inf: Caffe's max pooling never picks its padding."""

    def __init__(self, padding: tuple[tuple[int, int], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.padding = padding

    def call(self, x: Any) -> Any:
        (top, bottom), (left, right) = self.padding
        return tf.pad(x, [[0, 0], [top, bottom], [left, right], [0, 0]], constant_values=-np.inf)


def conv(x: Any, name: str, filters: int, kernel: int) -> Any:
    return layers.Conv2D(filters, kernel, padding="valid", name=name)(x)


def prelu(x: Any, name: str) -> Any:
    return layers.PReLU(shared_axes=[1, 2] if len(x.shape) == 4 else None, name=name)(x)


def max_pool(x: Any, name: str, kernel: int, stride: int) -> Any:
    """Caffe MAX pooling (output size rounded up): -inf padding on the bottom and right as needed."""
    height, width = int(x.shape[1]), int(x.shape[2])
    out_h, out_w = caffe_pool_size(height, kernel, stride), caffe_pool_size(width, kernel, stride)
    extra_h, extra_w = max((out_h - 1) * stride + kernel - height, 0), max((out_w - 1) * stride + kernel - width, 0)
    if extra_h or extra_w:
        x = NegInfPadding2D(((0, extra_h), (0, extra_w)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(kernel, stride, padding="valid", name=name)(x)


def inner_product(x: Any, name: str, units: int) -> Any:
    if len(x.shape) > 2:
        x = layers.Flatten(name=f"{name}_flatten")(x)
    return layers.Dense(units, name=name)(x)


def det1(first_prelu: str = "PReLU1") -> keras.Model:
    data = keras.Input((12, 12, 3), name="data")
    out: dict[str, Any] = {}
    x = out["conv1__conv1"] = conv(data, "conv1", 10, 3)
    x = out["PReLU1__conv1"] = prelu(x, first_prelu)
    x = out["pool1__pool1"] = max_pool(x, "pool1", 2, 2)
    x = out["conv2__conv2"] = conv(x, "conv2", 16, 3)
    x = out["PReLU2__conv2"] = prelu(x, "PReLU2")
    x = out["conv3__conv3"] = conv(x, "conv3", 32, 3)
    x = out["PReLU3__conv3"] = prelu(x, "PReLU3")
    out["conv4-1__conv4-1"] = conv(x, "conv4-1", 2, 1)
    out["conv4-2__conv4-2"] = conv(x, "conv4-2", 4, 1)
    out["prob1__prob1"] = layers.Softmax(name="prob1")(out["conv4-1__conv4-1"])
    return keras.Model(data, out, name="det1")


def det1_misnamed_prelu() -> keras.Model:
    return det1(first_prelu="prelu1")


def det2() -> keras.Model:
    data = keras.Input((24, 24, 3), name="data")
    out: dict[str, Any] = {}
    x = out["conv1__conv1"] = conv(data, "conv1", 28, 3)
    x = out["prelu1__conv1"] = prelu(x, "prelu1")
    x = out["pool1__pool1"] = max_pool(x, "pool1", 3, 2)
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
    return keras.Model(data, out, name="det2")


def det3() -> keras.Model:
    data = keras.Input((48, 48, 3), name="data")
    out: dict[str, Any] = {}
    x = out["conv1__conv1"] = conv(data, "conv1", 32, 3)
    x = out["prelu1__conv1"] = prelu(x, "prelu1")
    x = out["pool1__pool1"] = max_pool(x, "pool1", 3, 2)
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
    return keras.Model(data, out, name="det3")


def det4() -> keras.Model:
    data = keras.Input((24, 24, 15), name="data")
    out: dict[str, Any] = {}
    branches = []
    for i in range(1, 6):
        lo = 3 * (i - 1)
        x = out[f"slicer_data__data24{i}"] = layers.Lambda(lambda t, lo=lo: t[..., lo: lo + 3],
                                                           name=f"slicer_data_{i}")(data)
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
    return keras.Model(data, out, name="det4")


BUILDERS = {"det1": det1, "det2": det2, "det3": det3, "det4": det4}
