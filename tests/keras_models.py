"""Keras models for ``--keras-model tests.keras_models:<function>`` in the keras3 and check tests.

How the spec is found: ``tests.keras_models`` is imported through ``sys.path``.
The CLI puts the working directory first on ``sys.path`` (as ``python -m``
does), so running caffeport from the repository root finds this module as
``tests.keras_models`` (``tests`` is a namespace package: no ``__init__.py``).
pytest's ``pythonpath = ["."]`` does the same for in-process calls.

The good models are the hand-written mirrors of the caffe-reference nets (and
MTCNN's det1) from tests/proof/test_keras_reference.py; the others are changed
on purpose (a layer missing, added, renamed or of another width, BatchNorm
built with Keras' default epsilon) so the report has something to find.
"""

from __future__ import annotations

import keras
from keras import layers

from tests.proof.reference_nets import B_RESNET_EPS
from tests.proof.test_keras_reference import (
    conv,
    inner_product,
    keras_a_lenet,
    keras_b_resnet_block,
    keras_det1,
    max_pool,
    prelu,
)


def lenet() -> keras.Model:
    """The a_lenet mirror: layer names equal to the Caffe ones."""
    return keras_a_lenet({}).model


def resnet_block() -> keras.Model:
    """The b_resnet_block mirror, BatchNormalization built with Caffe's eps values."""
    return keras_b_resnet_block(B_RESNET_EPS).model


def resnet_block_default_eps() -> keras.Model:
    """The b_resnet_block mirror with every BatchNormalization at Keras' default epsilon, 1e-3 (Caffe's: 1e-5)."""
    return keras_b_resnet_block(dict.fromkeys(B_RESNET_EPS, 1e-3)).model


def det1() -> keras.Model:
    """MTCNN's PNet mirror."""
    return keras_det1({}).model


def det1_misnamed_prelu() -> keras.Model:
    """PNet with its first PReLU named ``prelu1`` where Caffe has ``PReLU1``: alpha would stay 0 (a plain ReLU)."""
    data = keras.Input((12, 12, 3), name="data")
    x = max_pool(prelu(conv(data, "conv1", 10, 3), "prelu1"), "pool1", 2, 2)
    x = prelu(conv(x, "conv2", 16, 3), "PReLU2")
    x = prelu(conv(x, "conv3", 32, 3), "PReLU3")
    return keras.Model(data, [layers.Softmax(name="prob1")(conv(x, "conv4-1", 2, 1)), conv(x, "conv4-2", 4, 1)])


def _lenet_variant(ip1_units: int = 500, with_ip2: bool = True, extra: bool = False,
                   conv_names: tuple[str, str] = ("conv1", "conv2")) -> keras.Model:
    data = keras.Input((28, 28, 1), name="data")
    x = max_pool(conv(data, conv_names[0], 20, 5), "pool1", 2, 2)
    x = max_pool(conv(x, conv_names[1], 50, 5), "pool2", 2, 2)
    x = layers.ReLU(name="relu1")(inner_product(x, "ip1", ip1_units))
    if with_ip2:
        x = inner_product(x, "ip2", 10)
    if extra:
        x = layers.Dense(10, name="extra_fc")(x)
    return keras.Model(data, layers.Softmax(name="prob")(x))


def lenet_without_ip2() -> keras.Model:
    """LeNet that stops at ip1: Caffe's ip2 has no Keras layer to go to."""
    return _lenet_variant(with_ip2=False)


def lenet_with_extra() -> keras.Model:
    """LeNet plus a weighted layer ``extra_fc`` Caffe has no weights for."""
    return _lenet_variant(extra=True)


def lenet_narrow_ip1() -> keras.Model:
    """LeNet whose ip1 has 400 units instead of 500: ip1 and ip2 shapes mismatch."""
    return _lenet_variant(ip1_units=400)


def lenet_renamed_convs() -> keras.Model:
    """LeNet whose convolutions are named ``conv_a`` and ``conv_b``: same classes, same places, other names."""
    return _lenet_variant(conv_names=("conv_a", "conv_b"))


#: not a model: for the error message test
NOT_A_MODEL = 42
