"""Reshape: ONNX ``Reshape`` (``allowzero=0``), whose 0 (copy the input's dim at that index) and one -1 are Caffe's.

Caffe replaces axes ``[axis, axis + num_axes)``: the axes before are 0s
(copied, so a dynamic batch flows through), ``reshape_param.shape`` goes in
as given (its 0s index the same input axes in both), and the axes after are
the inferred dims (their index moves when the replaced span changes length).
"""

from __future__ import annotations

from caffeport.layers.fields import proto_shape
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Reshape")
class Reshape(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        shape = ctx.shape
        dims = list(proto_shape(p.get("shape", {})))
        axis, num_axes = int(p.get("axis", 0)), int(p.get("num_axes", -1))
        start = axis if axis >= 0 else len(shape) + axis + 1
        end = len(shape) if num_axes == -1 else start + num_axes
        return [ctx.graph.reshape(ctx.x, [0] * start + dims + list(shape[end:]), "reshape")]
