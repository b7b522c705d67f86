"""Scale and Bias: ``Mul`` / ``Add`` of the factor (addend) reshaped to broadcast from ``axis`` over ``num_axes``.

The learned blob (or the second bottom) has the shape
``x.shape[axis : axis + num_axes]``; trailing 1s make ONNX's numpy-style
broadcasting apply it exactly where Caffe's ``(outer, dim, inner)`` loop
does. Scale's ``bias_term`` adds its bias blob the same way after the product.
"""

from __future__ import annotations

from caffeport.layers.fields import axis_index
from caffeport.layers.scale import broadcast_shape
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


def _operand_shape(ctx: Context) -> list[int]:
    """The factor's shape with trailing 1s to the input's rank."""
    p = ctx.params()
    ndim = len(ctx.shape)
    if len(ctx.bottoms) >= 2:
        factor = list(ctx.bottom_shapes[1])
    else:
        factor = [d for d in broadcast_shape(ctx.layer, p, ctx.shape) or () if d is not None]
    start = 0 if not factor else axis_index(ctx.layer, p.get("axis", 1), ndim)
    return factor + [1] * (ndim - start - len(factor))


def _apply(ctx: Context, op: str, x: str, blob_index: int | None, hint: str) -> str:
    shape = _operand_shape(ctx)
    if blob_index is None:  # the second bottom
        operand = ctx.graph.reshape(ctx.bottoms[1], shape, f"{hint}_broadcast")
    else:
        operand = ctx.weight(blob_index, hint, tuple(shape))
    return ctx.op(op, [x, operand], "scaled" if op == "Mul" else "biased")


@lowering("Scale")
class Scale(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        two = len(ctx.bottoms) >= 2
        y = _apply(ctx, "Mul", ctx.x, None if two else 0, "scale")
        if ctx.params().get("bias_term", False):
            y = _apply(ctx, "Add", y, 0 if two else 1, "bias")
        return [y]


@lowering("Bias")
class Bias(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        return [_apply(ctx, "Add", ctx.x, None if len(ctx.bottoms) >= 2 else 0, "bias")]
