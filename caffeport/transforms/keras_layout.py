"""Keras layouts: Caffe blobs to the weights of the matching Keras layer, in Keras' own order.

Keras loaders assign weights by position, so ``weight_names`` order is
correctness (see shared/notes/keras-formats.md). Kernel layouts do not depend
on the data format; the PReLU alpha does (it spans the non-shared axes).
Kernels are numpy views of the stored blobs in their stored dtype: exporters
copy and cast them block by block (`caffeport.blocks`).
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.layers.caffe_weights import (
    conv_weight,
    deconv_full_kernel,
    group,
    inner_product_matrix,
    is_depthwise,
)
from caffeport.layers.layout import as_compute, note, vector
from caffeport.transforms.layouts import converter, expect_blobs, run_layouts
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


@converter("keras", "InnerProduct")
def inner_product(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1, 2)
    kernel = inner_product_matrix(layer).T
    layer.target = "Dense"
    _with_bias(layer, kernel, ["kernel", "bias"])
    note(net, layer, "converted", f"Dense kernel {kernel.shape} (in, out)")


@converter("keras", "BatchNorm")
def batch_norm(net: Net, layer: Layer, options: Options) -> None:
    """After the BatchNorm passes: [gamma, (beta,) mean, var] or [mean, var]."""
    names = {4: ["gamma", "beta", "moving_mean", "moving_variance"], 3: ["gamma", "moving_mean", "moving_variance"],
             2: ["moving_mean", "moving_variance"]}
    if len(layer.blobs) not in names:
        raise ModelStructureError(f"BatchNorm has {len(layer.blobs)} blobs after scale-factor division",
                                  layer=layer.name)
    layer.blobs = [vector(b) for b in layer.blobs]
    layer.weight_names = names[len(layer.blobs)]
    layer.target = "BatchNormalization"


@converter("keras", "PReLU")
def prelu(net: Net, layer: Layer, options: Options) -> None:
    """The alpha of a Keras PReLU sharing the spatial axes: (1, 1, C) after a 4-D blob, (C,) after 2-D."""
    expect_blobs(layer, 1)
    slope = vector(layer.blobs[0])
    shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
    ndim = len(shape) if shape is not None else None
    if ndim is None:
        note(net, layer, "warning", "input shape unknown: alpha written as (C,); reshape it for a 4-D input")
        net.warnings.append(f"layer {layer.name!r}: PReLU input shape unknown, alpha written as {slope.shape}")
        alpha = slope
    else:
        spatial = ndim - 2  # axes after (N, C)
        if net.metadata.get("data_format") == "channels_first":
            alpha = slope.reshape(slope.size, *([1] * spatial))
        else:
            alpha = slope.reshape(*([1] * spatial), slope.size)
    layer.blobs = [alpha]
    layer.weight_names = ["alpha"]
    layer.target = "PReLU"
    shared = " (channel_shared)" if slope.size == 1 else ""
    note(net, layer, "converted", f"PReLU alpha {alpha.shape}{shared}")


@converter("keras", "Scale")
def scale(net: Net, layer: Layer, options: Options) -> None:
    """A Scale no BatchNorm absorbed: [scale(, bias)], per channel."""
    expect_blobs(layer, 1, 2)
    layer.blobs = [_per_channel(b) for b in layer.blobs]
    layer.weight_names = ["scale", "bias"][: len(layer.blobs)]
    layer.target = "Scale"
    note(net, layer, "converted", "Scale alone: " + ", ".join(layer.weight_names) + " (no Keras built-in)")


@converter("keras", "Bias")
def bias(net: Net, layer: Layer, options: Options) -> None:
    expect_blobs(layer, 1)
    layer.blobs = [_per_channel(layer.blobs[0])]
    layer.weight_names = ["bias"]
    layer.target = "Bias"
    note(net, layer, "converted", "Bias alone (no Keras built-in)")


def _per_channel(blob: np.ndarray) -> np.ndarray:
    """A Scale/Bias blob: (C,) when it is per channel (also from legacy 4-D); other shapes as stored."""
    b = as_compute(blob)
    return b.reshape(-1) if b.ndim <= 1 or sum(d > 1 for d in b.shape) <= 1 else b


@converter("keras", "Embed")
def embed(net: Net, layer: Layer, options: Options) -> list[Layer]:
    """Embedding keeps W (input_dim, num_output); a Caffe Embed bias becomes its own ``<name>_bias`` layer."""
    expect_blobs(layer, 1, 2)
    weights = np.asarray(layer.blobs[0])
    extra = []
    if len(layer.blobs) == 2:
        extra.append(Layer(name=f"{layer.name}_bias", type="EmbedBias", blobs=[vector(layer.blobs[1])],
                           weight_names=["bias"], target="Bias", bottoms=list(layer.tops), tops=list(layer.tops)))
        note(net, layer, "split", f"the Embed bias has no place in Keras' Embedding: written as {extra[0].name!r}")
    layer.blobs = [weights]
    layer.weight_names = ["embeddings"]
    layer.target = "Embedding"
    note(net, layer, "converted", f"Embedding embeddings {weights.shape}")
    return extra


@converter("keras", "LSTM")
def lstm(net: Net, layer: Layer, options: Options) -> None:
    """Gate blocks already in Keras order (lstm_gate_order): transpose to kernel (I, 4H), recurrent (H, 4H)."""
    expect_blobs(layer, 3)
    w_x, b, w_h = (np.asarray(x) for x in layer.blobs)
    layer.blobs = [w_x.T, w_h.T, b.reshape(-1)]
    layer.weight_names = ["kernel", "recurrent_kernel", "bias"]
    layer.target = "LSTM"
    note(net, layer, "converted", f"LSTM kernel {w_x.T.shape}, recurrent_kernel {w_h.T.shape}")


@converter("keras", "RNN")
def rnn(net: Net, layer: Layer, options: Options) -> list[Layer]:
    """Caffe RNN (W_xh, b_h, W_hh, W_ho, b_o) -> SimpleRNN + Dense ``<name>_output`` (tanh applied by Caffe)."""
    expect_blobs(layer, 5)
    w_xh, b_h, w_hh, w_ho, b_o = (np.asarray(x) for x in layer.blobs)
    layer.blobs = [w_xh.T, w_hh.T, b_h.reshape(-1)]
    layer.weight_names = ["kernel", "recurrent_kernel", "bias"]
    layer.target = "SimpleRNN"
    output = Layer(name=f"{layer.name}_output", type="RNNOutput", blobs=[w_ho.T, b_o.reshape(-1)],
                   weight_names=["kernel", "bias"], target="Dense", bottoms=list(layer.tops), tops=list(layer.tops))
    note(net, layer, "split", f"SimpleRNN {layer.name!r} + Dense {output.name!r} (apply tanh after it, as Caffe)")
    return [output]
