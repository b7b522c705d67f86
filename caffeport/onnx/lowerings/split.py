"""Split (Caffe's automatic copies): an ``Identity`` per top."""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Split")
class Split(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        return [ctx.identity(ctx.x) for _ in ctx.layer.tops]
