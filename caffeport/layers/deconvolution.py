"""Deconvolution: the transpose (gradient) of a Convolution.

Shapes (``DeconvolutionLayer::compute_output_shape``):
``out = stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad``.

Blobs: weight ``(channels, num_output / group, *kernel)`` (input channels
first: Caffe stores the weight of the convolution this one transposes), and
with ``bias_term`` a bias ``(num_output,)``.
"""

from __future__ import annotations

from caffeport.ir import Layer
from caffeport.layers.convolution import ConvolutionBase
from caffeport.layers.registry import BlobShape, register


@register("Deconvolution")
class Deconvolution(ConvolutionBase):
    def spatial_out(self, layer: Layer, size: int, k: int, pad: int, stride: int, dilation: int) -> int:
        return stride * (size - 1) + dilation * (k - 1) + 1 - 2 * pad

    def weight_shape(self, num_output: int, channels: int | None, group: int, kernel: tuple[int, ...]) -> BlobShape:
        return (channels, num_output // group, *kernel)
