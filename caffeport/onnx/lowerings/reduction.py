"""Reduction: SUM, ASUM (``ReduceL1``), SUMSQ (``ReduceSumSquare``) or MEAN over the axes from ``axis`` on, times coeff.

Caffe folds MEAN's ``1 / dim`` into the coefficient (in float32), so MEAN is
a ``ReduceSum`` times ``coeff / dim``; a coefficient of 1 multiplies nothing.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.layers import layer_type
from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering

_OPS = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceSum"}


@lowering("Reduction")
class Reduction(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        op = layer_type("Reduction").operation(ctx.layer)  # type: ignore[attr-defined]
        axis = axis_index(ctx.layer, p.get("axis", 0), len(ctx.shape))
        coeff = np.float32(p.get("coeff", 1.0))
        if op == "MEAN":
            coeff = np.float32(coeff / np.float32(math.prod(ctx.shape[axis:])))
        y = ctx.graph.reduce(_OPS[op], ctx.x, list(range(axis, len(ctx.shape))), False, "reduce")
        if coeff != 1:
            y = ctx.op("Mul", [y, ctx.graph.scalar(float(coeff), "coeff")], "scaled")
        return [y]
