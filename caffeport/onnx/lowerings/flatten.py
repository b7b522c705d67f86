"""Flatten (axes ``axis`` .. ``end_axis`` merged): ``Reshape`` to ``[0] * axis + [-1] + the axes after end_axis``.

The leading 0s copy the input's dims (so a dynamic batch flows through) and
the trailing dims are the inferred ones; ONNX's own ``Flatten`` always gives
2-D, which is Caffe's only for ``end_axis: -1``.
"""

from __future__ import annotations

from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Flatten")
class Flatten(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        ndim = len(ctx.shape)
        start = axis_index(ctx.layer, p.get("axis", 1), ndim)
        end = axis_index(ctx.layer, p.get("end_axis", -1), ndim, "end_axis")
        return [ctx.graph.reshape(ctx.x, [0] * start + [-1] + list(ctx.shape[end + 1 :]), "flatten")]
