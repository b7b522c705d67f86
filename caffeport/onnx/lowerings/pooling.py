"""Pooling (MAX, AVE, global), exactly as Caffe's CPU pooling computes them.

ONNX's ``ceil_mode`` is not Caffe's rounding (Caffe also drops a last window
starting in the padding), and ``count_include_pad`` divides the clipped last
window by the whole kernel where Caffe divides by the window clipped to
``input + pad``. So the output size is Caffe's own (the shape caffeport
inferred), and the end padding that makes ONNX's floor-mode pooling give
exactly that size is made explicit:

- MAX: ``MaxPool`` with pads ``(pad, end)``, ``end = (out - 1) * stride +
  kernel - in - pad``; ONNX's padding never wins a max, as Caffe's windows
  clipped to the image. When ``end`` reaches the kernel (an unpadded ceil-mode
  window entirely past the image, which Caffe fills with ``-FLT_MAX``), the
  input is padded explicitly with ``-FLT_MAX`` first, Caffe's initial value.
- AVE: the input is zero-padded explicitly; where Caffe's divisor is the
  kernel area everywhere, an unpadded ``AveragePool`` is exact; otherwise
  the window sums come from a depthwise ``Conv`` with a kernel of ones and
  are divided by a constant holding Caffe's divisor per output position.
- A negative ``end`` (floor rounding leaving input rows unread) slices the
  output to Caffe's size.
- ``global_pooling``: ``GlobalMaxPool`` / ``GlobalAveragePool``.

Refused: STOCHASTIC (as the reference refuses it) and MAX's second (mask) top.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer
from caffeport.layers.pooling import pool_method
from caffeport.layers.windows import pool_window
from caffeport.onnx.graph import FLT_MAX, GraphBuilder
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


def caffe_divisor(size: int, kernel: int, stride: int, pad: int, out: int) -> np.ndarray:
    """Caffe's AVE divisor along one axis: the window clipped to ``size + pad``, per output position."""
    start = np.arange(out) * stride - pad
    return np.minimum(start + kernel, size + pad) - start


def lower_pool(g: GraphBuilder, x: str, method: str, channels: int, size: tuple[int, int], kernel: tuple[int, int],
               stride: tuple[int, int], pad: tuple[int, int], out: tuple[int, int]) -> str:
    """Caffe's MAX or AVE pooling of ``x`` (N, C, H, W) to ``out`` positions (see the module docstring)."""
    end = [(o - 1) * s + k - n - p for n, k, s, p, o in zip(size, kernel, stride, pad, out, strict=True)]
    end_pad = [max(e, 0) for e in end]
    attrs = {"kernel_shape": list(kernel), "strides": list(stride)}
    if method == "MAX":
        if all(p < k for p, k in zip([*pad, *end_pad], [*kernel, *kernel], strict=True)):
            y = g.op("MaxPool", [x], "maxpool", pads=[*pad, *end_pad], **attrs)
        else:
            padded = g.pad(x, [0, 0, *pad], [0, 0, *end_pad], -FLT_MAX, "pad")
            y = g.op("MaxPool", [padded], "maxpool", **attrs)
    else:
        divisor = np.outer(*(caffe_divisor(n, k, s, p, o) for n, k, s, p, o
                             in zip(size, kernel, stride, pad, out, strict=True))).astype(np.float32)
        padded = g.pad(x, [0, 0, *pad], [0, 0, *end_pad], 0.0, "pad") if any(pad) or any(end_pad) else x
        if np.all(divisor == kernel[0] * kernel[1]):
            y = g.op("AveragePool", [padded], "avgpool", **attrs)
        else:
            ones = g.const(np.ones((channels, 1, *kernel), np.float32), "ones")
            total = g.op("Conv", [padded, ones], "window_sum", group=channels, **attrs)
            if any(e < 0 for e in end):
                total = g.slice(total, [0, 0], list(out), [2, 3])
            return g.op("Div", [total, g.const(divisor, "divisor")], "avgpool")
    if any(e < 0 for e in end):
        y = g.slice(y, [0, 0], list(out), [2, 3])
    return y


@lowering("Pooling")
class Pooling(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        if len(layer.tops) > 1:
            return "the MAX mask top (argmax indices) has no exact ONNX lowering (MaxPool's Indices count differently)"
        if layer.bottom_shapes and layer.bottom_shapes[0] is not None and len(layer.bottom_shapes[0]) != 4:
            return "pooling of a non-4-D input"
        return None

    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        method = pool_method(p.get("pool"))
        _, c, h, w = ctx.shape
        if p.get("global_pooling", False):
            return [ctx.op("GlobalMaxPool" if method == "MAX" else "GlobalAveragePool", [ctx.x])]
        window = pool_window(ctx.layer)
        out = ctx.top_shapes[0]
        return [lower_pool(ctx.graph, ctx.x, method, c, (h, w), window.kernel[:2], window.stride[:2],  # type: ignore
                           window.pad[:2], (out[2], out[3]))]  # type: ignore[arg-type]
