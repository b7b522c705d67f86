"""Dropout: the identity at TEST time (Caffe's inverted dropout scales only in TRAIN)."""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Dropout")
class Dropout(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        return [ctx.identity(ctx.x)]
