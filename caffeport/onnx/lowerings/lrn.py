"""LRN: ACROSS_CHANNELS is ONNX ``LRN`` itself; WITHIN_CHANNEL is Caffe's small net of layers, op for op.

ONNX's LRN divides ``alpha`` by ``size`` and sums the squares of channels
``[c - (size - 1) / 2, c + (size - 1) / 2]`` clipped to the tensor, then
``x / (bias + alpha / size * sum) ^ beta``: Caffe's ``k + alpha / local_size
* sum`` over its zero-padded channel window, with ``bias = k``. Caffe requires
an odd ``local_size``, where the two windows agree.

WITHIN_CHANNEL: ``x^2``, zero-padded by ``(size - 1) / 2`` and averaged over
``size x size`` windows (stride 1: Caffe's divisor is the full window
everywhere there), then ``(1 + alpha * avg) ^ -beta`` times ``x``.
"""

from __future__ import annotations

import numpy as np

from caffeport.layers.lrn import _region
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("LRN")
class LRN(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        size = int(p.get("local_size", 5))
        alpha, beta = float(np.float32(p.get("alpha", 1.0))), float(np.float32(p.get("beta", 0.75)))
        if _region(p) == "ACROSS_CHANNELS":
            return [ctx.op("LRN", [ctx.x], alpha=alpha, beta=beta, bias=float(np.float32(p.get("k", 1.0))),
                           size=size)]
        if np.float32(alpha) * -np.float32(beta) == 0:
            return [ctx.identity(ctx.x)]
        g = ctx.graph
        pad = (size - 1) // 2
        square = ctx.op("Mul", [ctx.x, ctx.x], "square")
        padded = g.pad(square, [0, 0, pad, pad], [0, 0, pad, pad], 0.0, "pad")
        average = ctx.op("AveragePool", [padded], "average", kernel_shape=[size, size], strides=[1, 1])
        base = ctx.op("Add", [ctx.op("Mul", [average, g.scalar(alpha, "alpha")], "scaled"), g.scalar(1.0, "one")],
                      "base")
        return [ctx.op("Mul", [ctx.x, ctx.op("Pow", [base, g.scalar(-beta, "power")], "scale")], "lrn")]
