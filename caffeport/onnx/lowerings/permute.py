"""Permute (SSD): ``Transpose`` with Caffe's order completed by the unlisted axes."""

from __future__ import annotations

from caffeport.layers.permute import full_order
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Permute")
class Permute(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        return [ctx.op("Transpose", [ctx.x], perm=full_order(ctx.layer, len(ctx.shape)))]
