"""Tile: ONNX ``Tile``, ``tiles`` repeats on Caffe's axis (both copy the whole block: ``[a, b] -> [a, b, a, b]``)."""

from __future__ import annotations

from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Tile")
class Tile(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        axis = axis_index(ctx.layer, p.get("axis", 1), len(ctx.shape))
        repeats = [1] * len(ctx.shape)
        repeats[axis] = int(p["tiles"])
        return [ctx.op("Tile", [ctx.x, ctx.graph.ints(repeats, "repeats")])]
