"""Embed: ``Gather`` of the weight's rows at the input's values cast to int64 (Caffe truncates), plus the bias.

The reference refuses an index that is not an integer in ``[0, input_dim)``;
ONNX ``Gather`` fails on out-of-range indices too (negative ones count from
the end there, so run `caffeport verify` on real inputs).
"""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering
from caffeport.onnx.proto import INT64


@lowering("Embed")
class Embed(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        n, k = int(p["num_output"]), int(p["input_dim"])
        indices = ctx.op("Cast", [ctx.x], "indices", to=INT64)
        y = ctx.op("Gather", [ctx.weight(0, "weight", (k, n)), indices], "gather", axis=0)
        if p.get("bias_term", True):
            y = ctx.op("Add", [y, ctx.weight(1, "bias", (n,))], "biased")
        return [y]
