"""MVN: per sample (and per channel unless ``across_channels``) mean removal and, by default, division by std + eps.

Caffe adds ``eps`` to the standard deviation, not to the variance, and gives
the top the legacy 4-D shape; a 2- or 3-D input is reshaped to it first.
"""

from __future__ import annotations

import numpy as np

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("MVN")
class MVN(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        g = ctx.graph
        shape = ctx.top_shapes[0]
        x = ctx.x if len(ctx.shape) == 4 else g.reshape(ctx.x, [0, *shape[1:]], "legacy4")
        axes = [1, 2, 3] if p.get("across_channels", False) else [2, 3]
        centred = ctx.op("Sub", [x, g.reduce("ReduceMean", x, axes, True, "mean")], "centred")
        if not p.get("normalize_variance", True):
            return [centred]
        var = g.reduce("ReduceMean", ctx.op("Mul", [centred, centred], "square"), axes, True, "var")
        std = ctx.op("Add", [ctx.op("Sqrt", [var], "std"), g.scalar(float(np.float32(p.get("eps", 1e-9))), "eps")],
                     "std_eps")
        return [ctx.op("Div", [centred, std], "mvn")]
