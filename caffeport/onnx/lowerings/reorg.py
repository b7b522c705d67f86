"""Reorg (YOLOv2 passthrough): darknet's index formula as ``Reshape`` / ``Transpose`` / ``Reshape``, both directions.

The same regrouping `caffeport.layers.reorg` computes: ``reverse: false``
reads the bottom's buffer as (N, C', H, s, W, s) and gathers it into
(N, s, s, C', H, W); ``reverse: true`` the true depth-to-space.
"""

from __future__ import annotations

from caffeport.layers.reorg import _stride_reverse
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Reorg")
class Reorg(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        stride, reverse = _stride_reverse(ctx.layer)
        _, c, h, w = ctx.shape
        c2 = c // (stride * stride)
        g = ctx.graph
        if reverse:
            blocks = g.reshape(ctx.x, [0, stride, stride, c2, h, w], "blocks")
            perm = [0, 3, 4, 1, 5, 2]
        else:
            blocks = g.reshape(ctx.x, [0, c2, h, stride, w, stride], "blocks")
            perm = [0, 3, 5, 1, 2, 4]
        moved = ctx.op("Transpose", [blocks], "moved", perm=perm)
        return [g.reshape(moved, [0, *ctx.top_shapes[0][1:]], "reorg")]
