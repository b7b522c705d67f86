"""Concat along Caffe's axis (``concat_dim`` or ``axis``); one bottom is passed through."""

from __future__ import annotations

from caffeport.layers.concat import concat_axis
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Concat")
class Concat(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        if len(ctx.bottoms) == 1:
            return [ctx.identity(ctx.x)]
        return [ctx.op("Concat", ctx.bottoms, axis=concat_axis(ctx.layer, len(ctx.shape)))]
