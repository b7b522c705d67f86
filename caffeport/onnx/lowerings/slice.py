"""Slice: ONNX ``Split`` with Caffe's part sizes (from ``slice_point``, or even) along its axis."""

from __future__ import annotations

from caffeport.layers.slice import slice_axis, slice_sizes
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Slice")
class Slice(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        if len(ctx.layer.tops) == 1:
            return [ctx.identity(ctx.x)]
        axis = slice_axis(ctx.layer, len(ctx.shape))
        return ctx.graph.split(ctx.x, slice_sizes(ctx.layer, ctx.shape), axis)
