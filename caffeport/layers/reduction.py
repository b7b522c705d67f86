"""Reduction: SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` (default 0) on, times ``coeff``."""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index
from caffeport.layers.registry import LayerType, Tops, register


@register("Reduction")
class Reduction(LayerType):
    param = "reduction_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        axis = axis_index(layer, self.params_of(layer).get("axis", 0), len(bottoms[0]))
        return [bottoms[0][:axis]]
