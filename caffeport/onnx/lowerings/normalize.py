"""Normalize (SSD): the L2 norm with eps inside the square root, exactly as the SSD layer, then the learned scale.

``across_spatial`` (default): ``x * (1 / sqrt(sum(x^2 over C, H, W) + eps))``
per sample; otherwise ``x / sqrt(eps + sum(x^2 over C))`` per position.
``ReduceL2`` would leave eps out, so the norm is ``ReduceSumSquare``, ``Add``
eps, ``Sqrt``. The scale is one value (``channel_shared``) or per channel.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Normalize")
class Normalize(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
        if shape is not None and not 2 <= len(shape) <= 4:
            return f"Normalize reads its bottom as N x C x H x W; a {len(shape)}-D bottom is not supported"
        return None

    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        g = ctx.graph
        ndim = len(ctx.shape)
        eps = g.scalar(float(np.float32(p.get("eps", 1e-10))), "eps")
        if p.get("across_spatial", True):
            sums = g.reduce("ReduceSumSquare", ctx.x, list(range(1, ndim)), True, "sum_squares")
            norm = ctx.op("Sqrt", [ctx.op("Add", [sums, eps], "sum_eps")], "norm")
            top = ctx.op("Mul", [ctx.x, ctx.op("Reciprocal", [norm], "inverse")], "normalized")
        else:
            sums = g.reduce("ReduceSumSquare", ctx.x, [1], True, "sum_squares")
            norm = ctx.op("Sqrt", [ctx.op("Add", [eps, sums], "sum_eps")], "norm")
            top = ctx.op("Div", [ctx.x, norm], "normalized")
        scale = ctx.blob(0).reshape(-1)
        if p.get("channel_shared", True):
            factor = g.scalar(float(scale[0]), "scale")
        else:
            factor = ctx.const(scale.reshape(-1, *([1] * (ndim - 2))), "scale")
        return [ctx.op("Mul", [top, factor], "scaled")]
