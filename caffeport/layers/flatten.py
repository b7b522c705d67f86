"""Flatten: axes ``axis`` through ``end_axis`` (inclusive, defaults 1 and -1) merge into one, in C order."""

from __future__ import annotations

import math

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error
from caffeport.layers.registry import LayerType, Tops, register


@register("Flatten")
class Flatten(LayerType):
    param = "flatten_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        p = self.params_of(layer)
        start = axis_index(layer, p.get("axis", 1), len(shape))
        end = axis_index(layer, p.get("end_axis", -1), len(shape), "end_axis")
        if end < start:
            raise error(layer, f"end_axis {end} comes before axis {start}")
        return [(*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])]
