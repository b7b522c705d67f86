"""Upsample: YOLOv3's nearest (one bottom) as ``Resize`` nearest, asymmetric coordinates, floor: ``in[y // scale]``.

SegNet's two-bottom max-unpooling is refused (its mask indices into the
output plane are not ONNX ``MaxUnpool``'s indices into the whole tensor).
"""

from __future__ import annotations

from caffeport.ir import Layer
from caffeport.layers.upsample import nearest_scale
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Upsample")
class Upsample(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        if len(layer.bottoms) != 1:
            return "SegNet's max-unpooling Upsample (two bottoms) has no exact ONNX lowering yet"
        shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
        if shape is not None and len(shape) != 4:
            return f"the nearest Upsample is 4-D (N, C, H, W); the input is {len(shape)}-D"
        return None

    def lower(self, ctx: Context) -> list[str]:
        scale = float(nearest_scale(ctx.layer))
        scales = ctx.const([1.0, 1.0, scale, scale], "scales")
        return [ctx.op("Resize", [ctx.x, "", scales], "upsample", mode="nearest",
                       coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
