"""InnerProduct: ``Gemm`` after ``Flatten`` at axis 1; ``MatMul`` + ``Add`` on the input reshaped at other axes.

Caffe multiplies the input viewed as ``(M, K)`` (M the axes before ``axis``)
by the weight, stored ``(N, K)`` (``(K, N)`` with ``transpose``): ``Gemm``'s
``transB`` takes either as stored. For ``axis`` other than 1 the leading axes
are kept by a ``Reshape`` to ``[0] * axis + [-1]`` (which copies them, so a
dynamic batch flows through) and a ``MatMul`` with the ``(K, N)`` matrix.
"""

from __future__ import annotations

import math

from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("InnerProduct")
class InnerProduct(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        axis = axis_index(ctx.layer, p.get("axis", 1), len(ctx.shape))
        n = int(p["num_output"])
        k = math.prod(ctx.shape[axis:])
        transpose = bool(p.get("transpose", False))
        stored = (k, n) if transpose else (n, k)
        bias_term = p.get("bias_term", True)
        # the weights are streamed from the model file when written (Context.weight), a transpose included
        if axis == 1:
            flat = ctx.op("Flatten", [ctx.x], "flatten", axis=1) if len(ctx.shape) != 2 else ctx.x
            inputs = [flat, ctx.weight(0, "weight", stored)] + ([ctx.weight(1, "bias", (n,))] if bias_term else [])
            return [ctx.op("Gemm", inputs, "gemm", transB=0 if transpose else 1)]
        rows = ctx.graph.reshape(ctx.x, [0] * axis + [-1], "rows")
        y = ctx.op("MatMul", [rows, ctx.weight(0, "weight", stored, transpose=not transpose)], "matmul")
        if bias_term:
            y = ctx.op("Add", [y, ctx.weight(1, "bias", (n,))], "biased")
        return [y]
