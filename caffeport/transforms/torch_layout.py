"""PyTorch layouts: Caffe's own layouts (PyTorch shares them), PyTorch's weight names.

Conv2d and ConvTranspose2d weights are exactly Caffe's (out, in/g, kh, kw) and
(in, out/g, kh, kw); Linear is (out, in). What changes is the naming, legacy
4-D shapes, BatchNorm (weight, bias, running_mean, running_var) and the LSTM
gate order (handled by the lstm_gate_order pass before this one).
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.layers.caffe_weights import conv_weight, inner_product_matrix
from caffeport.layers.layout import note, vector
from caffeport.transforms.layouts import converter, expect_blobs, run_layouts
from caffeport.transforms.registry import Options, register_pass


@register_pass("torch_layout", requires=("lstm_gates_ifgo", "batchnorm_fused"), provides=("layout", "torch_layout"))
def torch_layout(net: Net, options: Options) -> None:
    run_layouts(net, options, "torch")


def _weight_bias(layer: Layer, weight: np.ndarray, target: str) -> None:
    layer.blobs = [weight, *(vector(b) for b in layer.blobs[1:2])]
    layer.weight_names = ["weight", "bias"][: len(layer.blobs)]
    layer.target = target


@converter("torch", "Convolution")
def convolution(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1, 2)
    w = conv_weight(layer)
    _weight_bias(layer, w, f"Conv{w.ndim - 2}d")
    note(net, layer, "converted", f"{layer.target} weight {w.shape} (Caffe layout kept)")


@converter("torch", "Deconvolution")
def deconvolution(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1, 2)
    w = conv_weight(layer)
    _weight_bias(layer, w, f"ConvTranspose{w.ndim - 2}d")
    note(net, layer, "converted", f"{layer.target} weight {w.shape} (Caffe layout kept, groups supported)")


@converter("torch", "InnerProduct")
def inner_product(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1, 2)
    w = inner_product_matrix(layer)
    _weight_bias(layer, w, "Linear")
    note(net, layer, "converted", f"Linear weight {w.shape} (out, in)")


@converter("torch", "BatchNorm")
def batch_norm(net: Net, layer: Layer, options: Options) -> None:
    """[gamma, beta, mean, var] -> weight, bias, running_mean, running_var.

    Without beta the bias is zeros; without a Scale there is no affine part at all.
    """
    blobs = [vector(b) for b in layer.blobs]
    if len(blobs) == 3:
        blobs.insert(1, np.zeros_like(blobs[0]))
    if len(blobs) == 4:
        layer.weight_names = ["weight", "bias", "running_mean", "running_var"]
    elif len(blobs) == 2:
        layer.weight_names = ["running_mean", "running_var"]
    else:
        raise ModelStructureError(f"BatchNorm has {len(blobs)} blobs after scale-factor division", layer=layer.name)
    layer.blobs = blobs
    layer.target = "BatchNorm"


@converter("torch", "PReLU")
def prelu(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1)
    layer.blobs = [vector(layer.blobs[0])]
    layer.weight_names = ["weight"]
    layer.target = "PReLU"


@converter("torch", "Scale", "Bias")
def scale_bias(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1, 2)
    layer.blobs = [vector(b) for b in layer.blobs]
    layer.weight_names = (["weight", "bias"] if layer.type == "Scale" else ["bias"])[: len(layer.blobs)]
    layer.target = layer.type


@converter("torch", "Embed")
def embed(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1, 2)
    layer.blobs = [np.asarray(layer.blobs[0]), *(vector(b) for b in layer.blobs[1:])]
    layer.weight_names = ["weight", "bias"][: len(layer.blobs)]
    layer.target = "Embedding"


@converter("torch", "LSTM")
def lstm(net: Net, layer: Layer, options: Options) -> None:
    """Gates already i, f, g, o: weight_ih (4H, I), weight_hh (4H, H), bias_ih, and bias_hh zeros (Caffe has one)."""
    expect_blobs(layer, 3)
    w_x, b, w_h = (np.asarray(x) for x in layer.blobs)
    layer.blobs = [w_x, w_h, b.reshape(-1), np.zeros(b.size, dtype=b.dtype)]
    layer.weight_names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    layer.target = "LSTM"


@converter("torch", "RNN")
def rnn(net: Net, layer: Layer, options: Options) -> list[Layer]:
    expect_blobs(layer, 5)
    w_xh, b_h, w_hh, w_ho, b_o = (np.asarray(x) for x in layer.blobs)
    layer.blobs = [w_xh, w_hh, b_h.reshape(-1), np.zeros(b_h.size, dtype=b_h.dtype)]
    layer.weight_names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    layer.target = "RNN"
    output = Layer(name=f"{layer.name}_output", type="RNNOutput", blobs=[w_ho, b_o.reshape(-1)],
                   weight_names=["weight", "bias"], target="Linear", bottoms=list(layer.tops), tops=list(layer.tops))
    note(net, layer, "split", f"RNN {layer.name!r} + Linear {output.name!r} (apply tanh after it, as Caffe)")
    return [output]
