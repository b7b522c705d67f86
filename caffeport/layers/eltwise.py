"""Eltwise: PROD, SUM (with one ``coeff`` per bottom) or MAX (default SUM) of equally shaped bottoms."""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import same_shapes
from caffeport.layers.registry import LayerType, Tops, register


@register("Eltwise")
class Eltwise(LayerType):
    param = "eltwise_param"
    bottoms = None

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [same_shapes(layer, bottoms, "Eltwise")]

    def key_params(self, layer: Layer) -> str:
        return str(self.params_of(layer).get("operation", "SUM"))
