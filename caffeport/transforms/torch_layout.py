"""PyTorch layouts: Caffe's own layouts (PyTorch shares them), PyTorch's weight names.

Conv2d and ConvTranspose2d weights are exactly Caffe's (out, in/g, kh, kw) and
(in, out/g, kh, kw); Linear is (out, in). What changes is the naming, legacy
4-D shapes, BatchNorm (weight, bias, running_mean, running_var) and the LSTM
gate order (handled by the lstm_gate_order pass before this one).
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Net
from caffeport.layers.caffe_weights import conv_weight
from caffeport.layers.layout import expect_blobs, note, vector
from caffeport.transforms.layouts import converter, run_layouts
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


