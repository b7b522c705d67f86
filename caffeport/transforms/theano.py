"""Theano convolves where Caffe cross-correlates: flip convolution kernels spatially.

Keras 1/2 on the Theano backend used true convolution, so a Caffe kernel
only gives Caffe's output there after a 180-degree rotation of its spatial
axes. TensorFlow, CNTK and PyTorch cross-correlate like Caffe and need none.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Net
from caffeport.layers.layout import note, report_action
from caffeport.transforms.registry import Options, register_pass

FLIPPED = report_action("kernel-flip", "kernels flipped")

_CONVOLUTIONS = ("Conv1D", "Conv2D", "Conv3D", "DepthwiseConv2D")


@register_pass("flip_kernels", requires=("keras_layout",))
def flip_kernels(net: Net, options: Options) -> None:
    net.conversion.kernels_flipped = True
    for layer in net.layers:
        if layer.framework_class not in _CONVOLUTIONS:
            continue
        kernel = layer.blobs[0]
        spatial = kernel.ndim - 2
        layer.blobs[0] = np.asarray(kernel)[(slice(None, None, -1),) * spatial]  # a view; exporters copy it
        note(net, layer, FLIPPED, "spatial axes flipped for Theano's true convolution")
