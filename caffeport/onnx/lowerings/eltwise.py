"""Eltwise: SUM with its coefficients (``Mul`` by each constant, then ``Add`` in bottom order), PROD, MAX.

Caffe's SUM starts from zero and adds ``coeff[i] * bottom[i]`` in order;
a coefficient of 1 is no multiplication. MAX is written with ``Greater`` and
``Where`` as Caffe compares (bottom 1 unless bottom 0 is strictly greater,
then each later bottom where it is strictly greater), so NaN and signed zeros
come out as in Caffe rather than as ONNX ``Max`` decides.
"""

from __future__ import annotations

from caffeport.layers import layer_type
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Eltwise")
class Eltwise(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        kind = layer_type("Eltwise")
        op = kind.operation(ctx.layer)  # type: ignore[attr-defined]
        coeffs = kind.coefficients(ctx.layer, len(ctx.bottoms))  # type: ignore[attr-defined]
        bottoms = ctx.bottoms
        g = ctx.graph
        if op == "PROD":
            top = ctx.op("Mul", [bottoms[0], bottoms[1]], "prod")
            for bottom in bottoms[2:]:
                top = ctx.op("Mul", [top, bottom], "prod")
            return [top]
        if op == "SUM":
            terms = [b if c == 1 else ctx.op("Mul", [b, g.scalar(c, "coeff")], "term")
                     for b, c in zip(bottoms, coeffs, strict=True)]
            top = ctx.op("Add", [terms[0], terms[1]], "sum")
            for term in terms[2:]:
                top = ctx.op("Add", [top, term], "sum")
            return [top]
        top = ctx.op("Where", [ctx.op("Greater", [bottoms[0], bottoms[1]], "greater"), bottoms[0], bottoms[1]], "max")
        for bottom in bottoms[2:]:
            top = ctx.op("Where", [ctx.op("Greater", [bottom, top], "greater"), bottom, top], "max")
        return [top]
