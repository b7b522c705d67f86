"""BatchNorm: ``(x - mean) / sqrt(var + eps)`` with Caffe's scale factor folded into the constants.

With the stored statistics (``use_global_stats``, the TEST default) mean and
variance are the blobs times ``1 / s`` (0 when the stored factor ``s`` is 0),
and ``std = sqrt(var + eps)`` is computed once in float32, as the reference
does: the graph is ``Sub(mean)`` then ``Div(std)``, per channel (axis 1).
``use_global_stats: false`` normalizes with the batch's own statistics:
``ReduceMean`` over every axis but 1, the biased variance, then the same.
"""

from __future__ import annotations

import numpy as np

from caffeport.onnx.lowerings.registry import Context, Lowering, broadcast_to_rank, lowering


@lowering("BatchNorm")
class BatchNorm(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        ndim = len(ctx.shape)
        c = ctx.shape[1]
        eps = np.float32(p.get("eps", 1e-5))
        g = ctx.graph
        if p.get("use_global_stats") is None or p.get("use_global_stats"):
            s = np.float32(ctx.blob(2).reshape(-1)[0])
            factor = np.float32(0) if s == 0 else np.float32(1) / s
            mean = factor * ctx.blob(0).reshape(c)
            std = np.sqrt(factor * ctx.blob(1).reshape(c) + eps)
            centred = ctx.op("Sub", [ctx.x, g.const(broadcast_to_rank(mean, 1, ndim), "mean")], "centred")
            return [ctx.op("Div", [centred, g.const(broadcast_to_rank(std, 1, ndim), "std")], "normalized")]
        axes = [0, *range(2, ndim)]
        mean = g.reduce("ReduceMean", ctx.x, axes, True, "batch_mean")
        centred = ctx.op("Sub", [ctx.x, mean], "centred")
        var = g.reduce("ReduceMean", ctx.op("Mul", [centred, centred], "square"), axes, True, "batch_var")
        std = ctx.op("Sqrt", [ctx.op("Add", [var, g.scalar(float(eps), "eps")], "var_eps")], "std")
        return [ctx.op("Div", [centred, std], "normalized")]
