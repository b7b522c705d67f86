"""Convolution, the forks' DepthwiseConvolution (a plain Convolution) and ConvolutionDepthwise (always depthwise).

Shapes (``BaseConvolutionLayer::Reshape``): N-D over the axes after ``axis``;
every bottom must share one shape and gets its own top;
``out = (in + 2 * pad - (dilation * (kernel - 1) + 1)) // stride + 1``.

Blobs (``BaseConvolutionLayer::LayerSetUp``): weight
``(num_output, channels / group, *kernel)``, and with ``bias_term`` (default
true) a bias ``(num_output,)``. ``group`` must divide both channels and
num_output.

Forward (``ConvolutionLayer::Forward_cpu``, ``im2col_cpu``): the axes before
``axis`` are one batch axis (``num_ = count(0, axis)``); per sample and
group, the input's ``channels / group`` channels are unrolled into a column
matrix whose row ``(c * kernel_h + i) * kernel_w + j`` holds, for every
output position ``o``, the input at ``o * stride - pad + (i, j) * dilation``
(zero outside the input), and the group's ``(num_output / group, Cg * kh *
kw)`` slice of the weight multiplies it (one float32 GEMM). The bias is then
added per output channel. A 1x1, stride-1, unpadded kernel skips the
unrolling; the result is the same.

The depthwise forks (verified from their sources):

- ``DepthwiseConvolution`` (yonghenglh6's layer, as in eric612/MobileNet-YOLO
  ``depthwise_conv_layer.cpp``) subclasses ``BaseConvolutionLayer``: its
  parameters, blobs, shape and CPU forward are Convolution's, ``group``
  defaulting to 1 (prototxts set it to the channel count).
- ``ConvolutionDepthwise`` (sp2823's layer, BVLC PR #5665
  ``conv_dw_layer.cpp``) reads only the window fields: it ignores ``group``
  and ``num_output``; its top has the bottom's channels, its weight is
  ``(channels, 1, kh, kw)`` and its bias ``(channels,)``; one 4-D bottom.
  Output channel ``c`` is input channel ``c`` cross-correlated with filter
  ``c`` (zero padding, dilation), plus ``bias[c]``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers.caffe_weights import conv_weight, is_depthwise
from caffeport.layers.fields import axis_index, error, positive, same_shapes
from caffeport.layers.layout import Options, expect_blobs, note, vector
from caffeport.layers.registry import BlobShape, LayerType, Tops, register
from caffeport.layers.windows import Window, conv_window, describe_window

#: largest unrolled (im2col) buffer, in bytes, built at once; larger batches are split
COLUMN_BYTES = 1 << 28


def taps(window: Window, out: tuple[int, ...], first: int = 0) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Each kernel tap's flat index and its strided slice of the zero-padded input, covering ``out`` output positions.

    Tap ``(i, j, ...)`` of output position ``o`` reads padded position
    ``o * stride + (i, j, ...) * dilation``; taps run in row-major kernel
    order, as im2col's rows do. ``first`` shifts the block of positions
    along the first spatial axis (a block of output rows).
    """
    ranges = [range(k) for k in window.kernel]
    shifts = [first] + [0] * (len(out) - 1)
    for index, offsets in enumerate(itertools.product(*ranges)):
        yield index, tuple(
            slice(t * d + f * s, t * d + f * s + s * (m - 1) + 1, s)
            for t, d, s, m, f in zip(offsets, window.dilation, window.stride, out, shifts, strict=True)
        )


def zero_pad(x: np.ndarray, pad: tuple[int, ...]) -> np.ndarray:
    """``x`` (N, C, *spatial) with ``pad`` zeros before and after each spatial axis (``x`` itself when no pad)."""
    if not any(pad):
        return x
    padded = np.zeros((*x.shape[:2], *(n + 2 * p for n, p in zip(x.shape[2:], pad, strict=True))), np.float32)
    padded[(slice(None), slice(None), *(slice(p, p + n) for n, p in zip(x.shape[2:], pad, strict=True)))] = x
    return padded


def conv_out_size(size: int, k: int, pad: int, stride: int, dilation: int) -> int:
    return (size + 2 * pad - (dilation * (k - 1) + 1)) // stride + 1


def batch_chunks(n: int, bytes_per_sample: int) -> Iterator[slice]:
    """Slices of the batch whose unrolled buffers stay under `COLUMN_BYTES` (one sample at least)."""
    step = max(1, COLUMN_BYTES // max(1, bytes_per_sample))
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


def _unrolled(xp: np.ndarray, kernels: np.ndarray, window: Window, out: tuple[int, ...]) -> np.ndarray:
    """im2col + one GEMM per sample and group: ``kernels`` (G, O/G, C/G * taps) times the unrolled padded input.

    The column buffer holds as many samples, or for a big image as many
    output rows of one sample, as fit in `COLUMN_BYTES`.
    """
    n, c = xp.shape[:2]
    group, og, depth = kernels.shape
    ntaps = math.prod(window.kernel)
    rows, inner = out[0], math.prod(out[1:])
    y = np.empty((n, group, og, rows * inner), np.float32)
    rows_at_once = max(1, COLUMN_BYTES // (c * ntaps * inner * 4))
    samples_at_once = max(1, rows_at_once // rows)
    for start in range(0, n, samples_at_once):
        part = slice(start, min(n, start + samples_at_once))
        xs = xp[part]
        count = xs.shape[0]
        for first in range(0, rows, rows_at_once):
            block = (min(rows, first + rows_at_once) - first, *out[1:])
            cols = np.empty((count, c, ntaps, *block), np.float32)
            for t, where in taps(window, block, first):
                cols[:, :, t] = xs[(slice(None), slice(None), *where)]
            cols = cols.reshape(count, group, depth, block[0] * inner)
            if block[0] == rows:
                np.matmul(kernels, cols, out=y[part])
            else:
                y[part, :, :, first * inner : (first + block[0]) * inner] = np.matmul(kernels, cols)
    return y


def convolve(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, group: int, window: Window) -> np.ndarray:
    """Caffe's grouped cross-correlation of ``x`` (N, C, *spatial) with ``weight`` (O, C / group, *kernel), float32."""
    n, c = x.shape[:2]
    o = weight.shape[0]
    cg, og = c // group, o // group
    out = tuple(conv_out_size(*args) for args in zip(x.shape[2:], window.kernel, window.pad, window.stride,
                                                      window.dilation, strict=True))
    positions = math.prod(out)
    ntaps = math.prod(window.kernel)
    xp = zero_pad(x, window.pad)
    if cg == 1 and og <= 8:  # depthwise (multiplier up to 8): per-tap multiply-accumulate beats tiny GEMMs
        y = _depthwise(xp, weight.reshape(c, og, ntaps), window, out)
    elif ntaps == 1 and all(s == 1 for s in window.stride) and not any(window.pad):
        # a 1x1 kernel: the input already is the column matrix
        y = np.matmul(weight.reshape(group, og, cg), x.reshape(n, group, cg, positions))
    else:
        y = _unrolled(xp, weight.reshape(group, og, cg * ntaps), window, out)
    y = y.reshape(n, o, *out)
    if bias is not None:
        y += bias.reshape(o, *([1] * len(out)))
    return y


def _depthwise(xp: np.ndarray, weight: np.ndarray, window: Window, out: tuple[int, ...]) -> np.ndarray:
    """group == channels: per tap, each input channel times its ``m`` filters' tap (weight (C, m, taps)), summed."""
    n, c = xp.shape[:2]
    m = weight.shape[1]
    spatial = [1] * len(out)
    acc = np.empty((n, c, m, *out), np.float32)
    term = np.empty_like(acc)
    for t, where in taps(window, out):
        view = xp[(slice(None), slice(None), *where)][:, :, None]
        np.multiply(view, weight[:, :, t].reshape(c, m, *spatial), out=acc if t == 0 else term)
        if t:
            acc += term
    return acc.reshape(n, c * m, *out)


class ConvolutionBase(LayerType):
    """What Convolution and Deconvolution share: the window, the group rule, the bias."""

    param = "convolution_param"
    bottoms = None

    def weighted(self, layer: Layer) -> bool:
        return True

    def group(self, layer: Layer, channels: int | None) -> int:
        """The number of groups (``group``, default 1, as ``BaseConvolutionLayer`` reads it).

        Refused unless positive here, where every reader of it (shape rule, blob shapes) passes: a ``group: 0``
        would otherwise divide by zero in `weight_shape` before the shape rule could say why.
        """
        group = int(self.params_of(layer).get("group", 1))
        if group <= 0:
            raise error(layer, f"convolution_param.group must be positive, got {group}")
        return group

    def num_output(self, layer: Layer, channels: int | None) -> int | None:
        """The top's channel count (``num_output``, required)."""
        return positive(layer, self.params_of(layer), "num_output", "convolution_param")

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
        num_output = self.num_output(layer, channels)
        assert num_output is not None  # a known channel count always decides it
        group = self.group(layer, channels)
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
        shape = bottoms[0] if bottoms else None
        spatial = 2
        if shape is not None:
            spatial = len(shape) - 1 - axis_index(layer, p.get("axis", 1), len(shape))
        window = conv_window(layer, spatial)
        channels = self.input_channels(layer, bottoms)
        num_output = self.num_output(layer, channels)
        if num_output is None:  # ConvolutionDepthwise before its bottom's shape is known
            return [(None, 1, *window.kernel), (None,)] if p.get("bias_term", True) else [(None, 1, *window.kernel)]
        weight = self.weight_shape(num_output, channels, self.group(layer, channels), window.kernel)
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

    # ------------------------------------------------------------------ forward helpers

    def weights(self, layer: Layer) -> tuple[np.ndarray, np.ndarray | None]:
        """The weight and (with ``bias_term``) the bias blob as aligned, C-ordered float32.

        A blob mapped from a caffemodel may sit at any byte offset, and numpy
        leaves BLAS out of a matmul on unaligned data; a copy of the weights
        costs little next to the convolution itself.
        """
        weight = self.blob(layer, 0)
        bias = None
        if self.params_of(layer).get("bias_term", True):
            bias = self.blob(layer, 1).reshape(-1)
        return weight, bias

    def each_bottom(self, layer: Layer, bottoms: list[np.ndarray]) -> Iterator[tuple[np.ndarray, tuple[int, ...],
                                                                                      Window]]:
        """Each bottom as (N, C, *spatial) (the axes before ``axis`` folded into N), its leading dims, its window."""
        p: dict[str, Any] = self.params_of(layer)
        for x in bottoms:
            axis = axis_index(layer, p.get("axis", 1), x.ndim)
            lead = x.shape[:axis]
            window = conv_window(layer, x.ndim - axis - 1)
            yield np.asarray(x, np.float32).reshape(math.prod(lead), *x.shape[axis:]), lead, window


    # ------------------------------------------------------------------ weight layouts

    def layout_groups(self, layer: Layer) -> int:
        """The groups the stored weight was made for (from the input's channels where the type needs them)."""
        return self.group(layer, self.input_channels(layer, layer.bottom_shapes))

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Conv2d / ConvTranspose2d weights are exactly Caffe's (out, in/g, kh, kw) / (in, out/g, kh, kw)."""
        expect_blobs(layer, 1, 2)
        w = conv_weight(layer)
        transposed = "Transpose" if layer.type == "Deconvolution" else ""
        layer.blobs = [w, *(vector(b) for b in layer.blobs[1:2])]
        layer.weight_names = ["weight", "bias"][: len(layer.blobs)]
        layer.framework_class = f"Conv{transposed}{w.ndim - 2}d"
        groups = self.layout_groups(layer)
        note(net, layer, "converted", f"{layer.framework_class} weight {w.shape} (Caffe layout kept"
             + (f", groups={groups})" if groups > 1 else ")"))
        return None


@register("Convolution", "DepthwiseConvolution")
class Convolution(ConvolutionBase):
    """See the module docstring: DepthwiseConvolution is a Convolution in every respect caffeport sees."""

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        weight, bias = self.weights(layer)
        tops = []
        for x, lead, window in self.each_bottom(layer, bottoms):
            kernels = weight.reshape(weight.shape[0], -1, *window.kernel)  # V1 files store 2-D kernels as 4-D too
            y = convolve(x, kernels, bias, self.group(layer, x.shape[1]), window)
            tops.append(y.reshape(*lead, *y.shape[1:]))
        return tops


    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """OIHW -> HWIO (grouped too: Conv2D(groups=g) has the same layout); depthwise -> (kh, kw, C, multiplier)."""
        expect_blobs(layer, 1, 2)
        w = conv_weight(layer)
        groups = self.layout_groups(layer)
        bias = [vector(b) for b in layer.blobs[1:2]]
        if is_depthwise(layer, groups) and options.depthwise == "depthwise":
            multiplier = w.shape[0] // groups
            kernel = w.reshape(groups, multiplier, *w.shape[2:]).transpose(2, 3, 0, 1)
            layer.blobs = [kernel, *bias]
            layer.weight_names = ["depthwise_kernel", "bias"][: len(layer.blobs)]
            layer.framework_class = "DepthwiseConv2D"
            note(net, layer, "converted", f"depthwise: DepthwiseConv2D kernel {kernel.shape} (kh, kw, C, multiplier)")
            return None
        kernel = w.transpose(*range(2, w.ndim), 1, 0)
        layer.blobs = [kernel, *bias]
        layer.weight_names = ["kernel", "bias"][: len(layer.blobs)]
        layer.framework_class = f"Conv{w.ndim - 2}D"
        grouping = f", groups={groups}" if groups > 1 else ""
        note(net, layer, "converted", f"{layer.framework_class} kernel {kernel.shape} (OIHW -> HWIO{grouping})")
        return None


@register("ConvolutionDepthwise")
class ConvolutionDepthwise(Convolution):
    """sp2823's depthwise layer: group and top channels are the bottom's channels whatever the params say."""

    bottoms = 1

    def group(self, layer: Layer, channels: int | None) -> int:
        return 1 if channels is None else channels

    def num_output(self, layer: Layer, channels: int | None) -> int | None:
        return channels

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        if len(bottoms[0]) != 4:
            raise error(layer, f"ConvolutionDepthwise needs a 4-D input (N, C, H, W), got {bottoms[0]}")
        if self.params_of(layer).get("axis", 1) not in (1, -3):
            raise error(layer, "ConvolutionDepthwise always convolves over axes 2 and 3 (axis must be 1)")
        return super().infer(layer, bottoms)[:1]

    def key_params(self, layer: Layer) -> str:
        params = super().key_params(layer).split(" ")[1:]  # out= and group= are the bottom's channels
        return " ".join(["depthwise", *(part for part in params if not part.startswith("group="))])


    def layout_groups(self, layer: Layer) -> int:
        """One group per channel: the weight (C, 1, kh, kw) says C even where no shape is known."""
        return int(layer.blobs[0].shape[0])
