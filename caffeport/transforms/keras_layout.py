"""Keras layouts: Caffe blobs to the weights of the matching Keras layer, in Keras' own order.

Keras loaders assign weights by position, so ``weight_names`` order is
correctness (see shared/notes/keras-formats.md). Kernel layouts do not depend
on the data format; the PReLU alpha does (it spans the non-shared axes).
Kernels are numpy views of the stored blobs in their stored dtype: exporters
copy and cast them block by block (`caffeport.blocks`).
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Net
from caffeport.layers.caffe_weights import (
    conv_weight,
    deconv_full_kernel,
    group,
    is_depthwise,
)
from caffeport.layers.layout import expect_blobs, note, vector
from caffeport.transforms.layouts import converter, run_layouts
from caffeport.transforms.registry import Options, register_pass


@register_pass("channels_last", provides=("data_format", "channels_last"))
def channels_last(net: Net, options: Options) -> None:
    net.metadata["data_format"] = "channels_last"


@register_pass("channels_first", provides=("data_format",))
def channels_first(net: Net, options: Options) -> None:
    net.metadata["data_format"] = "channels_first"


@register_pass("keras_layout", requires=("data_format", "lstm_gates_ifgo", "batchnorm_fused"),
               provides=("layout", "keras_layout"))
def keras_layout(net: Net, options: Options) -> None:
    run_layouts(net, options, "keras")


def _with_bias(layer: Layer, weight: np.ndarray, names: list[str]) -> None:
    layer.blobs = [weight, *(vector(b) for b in layer.blobs[1:2])]
    layer.weight_names = names[: len(layer.blobs)]


@converter("keras", "Convolution")
def convolution(net: Net, layer: Layer, options: Options) -> None:
    """OIHW -> HWIO (grouped too: Conv2D(groups=g) has the same layout); depthwise -> (kh, kw, C, m)."""
    expect_blobs(layer, 1, 2)
    w = conv_weight(layer)
    if is_depthwise(layer) and options.depthwise == "depthwise":
        channels = group(layer)
        multiplier = w.shape[0] // channels
        kernel = w.reshape(channels, multiplier, *w.shape[2:]).transpose(2, 3, 0, 1)
        layer.target = "DepthwiseConv2D"
        _with_bias(layer, kernel, ["depthwise_kernel", "bias"])
        note(net, layer, "converted", f"depthwise: DepthwiseConv2D kernel {kernel.shape} (kh, kw, C, multiplier)")
        return
    kernel = w.transpose(*range(2, w.ndim), 1, 0)
    layer.target = f"Conv{w.ndim - 2}D"
    _with_bias(layer, kernel, ["kernel", "bias"])
    grouping = f", groups={group(layer)}" if group(layer) > 1 else ""
    note(net, layer, "converted", f"{layer.target} kernel {kernel.shape} (OIHW -> HWIO{grouping})")


@converter("keras", "Deconvolution")
def deconvolution(net: Net, layer: Layer, options: Options) -> None:
    """(in, out/g, kh, kw) -> Conv2DTranspose (kh, kw, out, in); groups expand block-diagonally."""
    expect_blobs(layer, 1, 2)
    full = deconv_full_kernel(layer)
    kernel = full.transpose(*range(2, full.ndim), 1, 0)
    layer.target = f"Conv{full.ndim - 2}DTranspose"
    _with_bias(layer, kernel, ["kernel", "bias"])
    detail = f"{layer.target} kernel {kernel.shape} (kh, kw, out, in)"
    if group(layer) > 1:
        detail += f"; group {group(layer)} expanded to a block-diagonal kernel (Keras has no grouped transpose)"
        net.warnings.append(f"layer {layer.name!r}: grouped Deconvolution expanded to a full kernel")
    note(net, layer, "converted", detail)


