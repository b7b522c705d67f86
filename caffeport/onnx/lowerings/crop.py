"""Crop: ``Slice`` of the axes from ``axis`` on, at Caffe's offsets, to the reference bottom's sizes.

Only the second bottom's (static) shape is read, as in Caffe, so it is not an input of the node.
"""

from __future__ import annotations

from caffeport.layers.crop import crop_offsets
from caffeport.layers.fields import axis_index
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Crop")
class Crop(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        shape, reference = ctx.bottom_shapes[0], ctx.bottom_shapes[1]
        offsets = crop_offsets(ctx.layer, shape, reference)
        axis = axis_index(ctx.layer, ctx.params().get("axis", 2), len(shape))
        axes = list(range(axis, len(shape)))
        return [ctx.graph.slice(ctx.x, [offsets[i] for i in axes], [offsets[i] + reference[i] for i in axes], axes,
                                hint="crop")]
