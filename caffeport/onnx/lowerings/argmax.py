"""ArgMax: ``TopK`` on the line reversed, so that ties put the larger index first, as Caffe's ``std::greater`` does.

ONNX ``TopK`` puts the lower index first among equal values; on the reversed
line (``Slice`` with step -1) the lower index is Caffe's larger one, and
``size - 1 - index`` maps it back. Without ``axis`` each sample is one line
(``Reshape`` to (N, -1)) and the top is (N, 1 or 2, top_k, 1...): the indices,
then with ``out_max_val`` the values.
"""

from __future__ import annotations

import math

from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering
from caffeport.onnx.proto import FLOAT

INT64_MIN = -(2**63)


@lowering("ArgMax")
class ArgMax(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        g = ctx.graph
        top_k = int(p.get("top_k", 1))
        out_max_val = bool(p.get("out_max_val", False))
        if p.get("axis") is not None:
            axis = axis_index(ctx.layer, p["axis"], len(ctx.shape))
            x, size = ctx.x, ctx.shape[axis]
        else:
            axis, size = 1, math.prod(ctx.shape[1:])
            x = g.reshape(ctx.x, [0, -1], "lines")
        reversed_ = g.slice(x, [-1], [INT64_MIN], [axis], [-1], hint="reversed")
        values, index = g.op("TopK", [reversed_, g.ints([top_k], "k")], "topk", outputs=2, axis=axis, largest=1,
                             sorted=1)
        index = ctx.op("Cast", [ctx.op("Sub", [g.ints([size - 1], "last"), index], "index")], "index_float",
                       to=FLOAT)
        top_shape = list(ctx.top_shapes[0])
        if p.get("axis") is not None:
            return [values if out_max_val else index]
        parts = [g.unsqueeze(index, [1])] + ([g.unsqueeze(values, [1])] if out_max_val else [])
        joined = ctx.op("Concat", parts, "joined", axis=1) if out_max_val else parts[0]
        return [g.reshape(joined, [0, *top_shape[1:]], "argmax")]
