"""SPP: each pyramid level's Pooling (`caffeport.onnx.lowerings.pooling.lower_pool`, Caffe's exact rules), flattened
channel-major and concatenated coarsest first; one level is that level's Pooling output itself."""

from __future__ import annotations

from caffeport.layers.pooling import pool_method
from caffeport.layers.spp import levels
from caffeport.onnx.lowerings.pooling import lower_pool
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("SPP")
class SPP(Lowering):
    """Each pyramid level's Pooling (the rules above), flattened channel-major and concatenated coarsest first."""

    def lower(self, ctx: Context) -> list[str]:
        method = pool_method(ctx.params().get("pool"))
        _, c, h, w = ctx.shape
        pooled = [lower_pool(ctx.graph, ctx.x, method, c, (h, w), level.kernel, level.kernel, level.pad, level.out)
                  for level in levels(ctx.layer, h, w)]
        if len(pooled) == 1:
            return pooled
        flat = [ctx.graph.reshape(top, [0, -1], "flatten") for top in pooled]
        return [ctx.op("Concat", flat, "concat", axis=1)]
