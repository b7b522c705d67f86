"""Convolution, DepthwiseConvolution and ConvolutionDepthwise as ONNX ``Conv`` (Deconvolution shares `ConvLike`).

Caffe's window (kernel, stride, symmetric pad, dilation; N-D) maps onto the
ONNX attributes one to one and the weights are Caffe's own layouts: Conv's
``(O, C / group, *kernel)`` and ConvTranspose's ``(C, O / group, *kernel)``
are exactly ONNX's. A grouped Deconvolution stays grouped (ConvTranspose's
``group``). Caffe's output size ``stride * (in - 1) + dilation * (kernel - 1)
+ 1 - 2 * pad`` is ConvTranspose's with ``output_padding`` 0. Each bottom gets
its own node with the shared weights, as Caffe gives each bottom its own top.
Refused: ``axis`` other than 1 (ONNX convolves from axis 2 on).
"""

from __future__ import annotations

from caffeport.ir import Layer
from caffeport.layers import layer_type
from caffeport.layers.fields import axis_index
from caffeport.layers.windows import conv_window
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


class ConvLike(Lowering):
    op_type = "Conv"

    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
        if shape is None:
            return "the input shape is not known"
        if axis_index(layer, layer.param("convolution_param").get("axis", 1), len(shape)) != 1:
            return "convolution over axes other than 2.. (convolution_param.axis != 1) has no ONNX Conv"
        return None

    def lower(self, ctx: Context) -> list[str]:
        kind = layer_type(ctx.layer.type)
        shape = ctx.shape
        window = conv_window(ctx.layer, len(shape) - 2)
        group = kind.group(ctx.layer, shape[1])  # type: ignore[attr-defined]
        # streamed from the model file when written (Context.weight); V1 files store 2-D kernels as 4-D too
        inputs = [ctx.weight(0, "weight", (ctx.layer.blobs[0].shape[0], -1, *window.kernel))]
        if ctx.params("convolution_param").get("bias_term", True):
            inputs.append(ctx.weight(1, "bias", (-1,)))
        pads = list(window.pad) * 2
        return [ctx.op(self.op_type, [x, *inputs], None, kernel_shape=list(window.kernel), strides=list(window.stride),
                       pads=pads, dilations=list(window.dilation), group=group) for x in ctx.bottoms]


@lowering("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise")
class Convolution(ConvLike):
    """``Conv``; ConvolutionDepthwise's group is its channel count (`caffeport.layers.convolution`)."""
