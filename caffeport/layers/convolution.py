"""Convolution, and the forks' ConvolutionDepthwise / DepthwiseConvolution (a Convolution with group = channels).

Shapes (``BaseConvolutionLayer::Reshape``): N-D over the axes after ``axis``;
every bottom must share one shape and gets its own top;
``out = (in + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1``.

Blobs (``BaseConvolutionLayer::LayerSetUp``): weight
``(num_output, channels / group, *kernel)``, and with ``bias_term`` (default
true) a bias ``(num_output,)``. ``group`` must divide both channels and
num_output.
"""

from __future__ import annotations

from typing import Any

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error, positive, same_shapes
from caffeport.layers.registry import BlobShape, LayerType, Tops, register
from caffeport.layers.windows import conv_window, describe_window


class ConvolutionBase(LayerType):
    """What Convolution and Deconvolution share: the window, the group rule, the bias."""

    param = "convolution_param"
    bottoms = None

    def weighted(self, layer: Layer) -> bool:
        return True

    def group(self, layer: Layer) -> int:
        return int(self.params_of(layer).get("group", 1))

    def spatial_out(self, layer: Layer, size: int, k: int, pad: int, stride: int, dilation: int) -> int:
        extent = dilation * (k - 1) + 1
        if size + 2 * pad < extent:
            raise error(layer, f"kernel extent {extent} is larger than the padded input {size} + 2*{pad}")
        return (size + 2 * pad - extent) // stride + 1

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = same_shapes(layer, bottoms, layer.type)
        p = self.params_of(layer)
        axis = axis_index(layer, p.get("axis", 1), len(shape))
        channels, spatial = shape[axis], shape[axis + 1 :]
        num_output = positive(layer, p, "num_output", "convolution_param")
        group = self.group(layer)
        if group <= 0 or channels % group or num_output % group:
            raise error(layer, f"group {group} must divide both channels {channels} and num_output {num_output}")
        window = conv_window(layer, len(spatial))
        out = []
        for size, k, pd, s, d in zip(spatial, window.kernel, window.pad, window.stride, window.dilation, strict=True):
            size_out = self.spatial_out(layer, size, k, pd, s, d)
            if size_out <= 0:
                raise error(layer, f"output size {size_out} along a spatial axis of size {size}")
            out.append(size_out)
        return [(*shape[:axis], num_output, *out)] * len(layer.tops)

    def input_channels(self, layer: Layer, bottoms: list[Shape | None]) -> int | None:
        shape = bottoms[0] if bottoms else None
        if shape is None:
            return None
        axis = axis_index(layer, self.params_of(layer).get("axis", 1), len(shape))
        return shape[axis]

    def weight_shape(self, num_output: int, channels: int | None, group: int, kernel: tuple[int, ...]) -> BlobShape:
        return (num_output, None if channels is None else channels // group, *kernel)

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        p = self.params_of(layer)
        num_output = positive(layer, p, "num_output", "convolution_param")
        shape = bottoms[0] if bottoms else None
        spatial = 2
        if shape is not None:
            spatial = len(shape) - 1 - axis_index(layer, p.get("axis", 1), len(shape))
        window = conv_window(layer, spatial)
        weight = self.weight_shape(num_output, self.input_channels(layer, bottoms), self.group(layer), window.kernel)
        return [weight, (num_output,)] if p.get("bias_term", True) else [weight]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        try:
            window = describe_window(conv_window(layer))
        except ShapeInferenceError:  # inspect describes what it can; the shape rule reports the error
            window = "window=?"
        parts = [f"out={p.get('num_output', '?')}", window]
        if p.get("group", 1) != 1:
            parts.append(f"group={p['group']}")
        if not p.get("bias_term", True):
            parts.append("no-bias")
        return " ".join(parts)


@register("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution")
class Convolution(ConvolutionBase):
    """See the module docstring. The depthwise forks' types take ``group`` = channels when it is not given."""

    def group(self, layer: Layer) -> int:
        p: dict[str, Any] = self.params_of(layer)
        if layer.type != "Convolution" and "group" not in p:
            return int(p.get("num_output", 1))
        return int(p.get("group", 1))
