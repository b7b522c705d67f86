"""Deconvolution as ONNX ``ConvTranspose``: Caffe's weight ``(C, O / group, *kernel)`` is ONNX's, the group kept.

Caffe's output size ``stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad``
is ConvTranspose's with ``output_padding`` 0; see `caffeport.onnx.lowerings.convolution`.
"""

from __future__ import annotations

from caffeport.onnx.lowerings.convolution import ConvLike
from caffeport.onnx.lowerings.registry import lowering


@lowering("Deconvolution")
class Deconvolution(ConvLike):
    """``ConvTranspose`` with Caffe's weight as it is stored and the group kept."""

    op_type = "ConvTranspose"
