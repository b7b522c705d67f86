"""Split: every top is the bottom (Caffe inserts these where one blob feeds several layers)."""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.registry import LayerType, Tops, register


@register("Split")
class Split(LayerType):
    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [bottoms[0]] * len(layer.tops)
