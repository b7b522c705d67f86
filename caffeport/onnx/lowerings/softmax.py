"""Softmax over ``axis``: ONNX ``Softmax`` (per axis from opset 13, as Caffe's: max-subtracted, exp, sum-divided)."""

from __future__ import annotations

from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Softmax")
class Softmax(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        axis = axis_index(ctx.layer, ctx.params().get("axis", 1), len(ctx.shape))
        return [ctx.op("Softmax", [ctx.x], axis=axis)]
