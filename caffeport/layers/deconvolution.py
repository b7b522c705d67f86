"""Deconvolution: the transpose (gradient) of a Convolution.

Shapes (``DeconvolutionLayer::compute_output_shape``):
``out = stride * (in - 1) + dilation * (kernel - 1) + 1 - 2 * pad``.

Blobs: weight ``(channels, num_output / group, *kernel)`` (input channels
first: Caffe stores the weight of the convolution this one transposes), and
with ``bias_term`` a bias ``(num_output,)``.

Forward (``DeconvolutionLayer::Forward_cpu`` = ``backward_cpu_gemm`` then
``col2im_cpu``): per sample and group, the transposed ``(channels / group,
num_output / group * kh * kw)`` weight slice times the group's input gives a
column matrix with one row per (output channel, kernel tap) and one column
per input position ``i``; col2im adds row ``(o, tap)`` of column ``i`` into
output channel ``o`` at ``i * stride - pad + tap * dilation``, dropping what
falls outside the output (so ``pad`` crops the full result on each side).
Groups stay grouped: input channels ``[g * C/G, (g + 1) * C/G)`` feed output
channels ``[g * O/G, (g + 1) * O/G)``. The bias is added per output channel.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Net
from caffeport.layers.caffe_weights import deconv_full_kernel
from caffeport.layers.convolution import ConvolutionBase, batch_chunks, taps
from caffeport.layers.layout import Options, expect_blobs, note, vector
from caffeport.layers.registry import BlobShape, register
from caffeport.layers.windows import Window


def deconvolve(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, group: int, window: Window) -> np.ndarray:
    """Caffe's grouped transposed convolution of ``x`` (N, C, *spatial) with ``weight`` (C, O / group, *kernel)."""
    n, c = x.shape[:2]
    size = x.shape[2:]
    cg, og = c // group, weight.shape[1]
    ntaps = math.prod(window.kernel)
    full = tuple(s * (m - 1) + d * (k - 1) + 1
                 for m, k, s, d in zip(size, window.kernel, window.stride, window.dilation, strict=True))
    # (G, og * taps, cg): each group's weight slice transposed, as backward_cpu_gemm multiplies it
    kernels = weight.reshape(group, cg, og * ntaps).transpose(0, 2, 1)
    y = np.zeros((n, group * og, *full), np.float32)
    for part in batch_chunks(n, group * og * ntaps * math.prod(size) * 4):
        xs = x[part].reshape(-1, group, cg, math.prod(size))
        cols = np.matmul(kernels, xs).reshape(xs.shape[0], group * og, ntaps, *size)
        target = y[part]
        for t, where in taps(window, size):
            target[(slice(None), slice(None), *where)] += cols[:, :, t]
    y = y[(slice(None), slice(None), *(slice(p, f - p) for p, f in zip(window.pad, full, strict=True)))]
    y = np.ascontiguousarray(y)
    if bias is not None:
        y += bias.reshape(-1, *([1] * len(size)))
    return y


@register("Deconvolution")
class Deconvolution(ConvolutionBase):
    def spatial_out(self, layer: Layer, size: int, k: int, pad: int, stride: int, dilation: int) -> int:
        return stride * (size - 1) + dilation * (k - 1) + 1 - 2 * pad

    def weight_shape(self, num_output: int, channels: int | None, group: int, kernel: tuple[int, ...]) -> BlobShape:
        return (channels, num_output // group, *kernel)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        weight, bias = self.weights(layer)
        tops = []
        for x, lead, window in self.each_bottom(layer, bottoms):
            kernels = weight.reshape(weight.shape[0], -1, *window.kernel)  # V1 files store 2-D kernels as 4-D too
            y = deconvolve(x, kernels, bias, self.group(layer, x.shape[1]), window)
            tops.append(y.reshape(*lead, *y.shape[1:]))
        return tops


    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """(in, out/g, kh, kw) -> Conv2DTranspose (kh, kw, out, in); groups expand block-diagonally (bounded)."""
        expect_blobs(layer, 1, 2)
        groups = self.layout_groups(layer)
        full = deconv_full_kernel(layer, groups)
        kernel = full.transpose(*range(2, full.ndim), 1, 0)
        layer.blobs = [kernel, *(vector(b) for b in layer.blobs[1:2])]
        layer.weight_names = ["kernel", "bias"][: len(layer.blobs)]
        layer.framework_class = f"Conv{full.ndim - 2}DTranspose"
        detail = f"{layer.framework_class} kernel {kernel.shape} (kh, kw, out, in)"
        if groups > 1:
            detail += f"; group {groups} expanded to a block-diagonal kernel (Keras has no grouped transpose)"
            net.warnings.append(f"layer {layer.name!r}: grouped Deconvolution expanded to a full kernel")
        note(net, layer, "converted", detail)
        return None
