"""Flatten: axes ``axis`` through ``end_axis`` (inclusive, defaults 1 and -1) merge into one, in C order.

``FlattenLayer`` (BVLC) only reshapes: the top shares the bottom's data, so the
forward is a C-order reshape (both axes via ``CanonicalAxisIndex``).
"""

from __future__ import annotations

import math

import numpy as np

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

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        (shape,) = self.infer(layer, [bottoms[0].shape])
        assert shape is not None
        return [np.ascontiguousarray(bottoms[0], dtype=np.float32).reshape(shape)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        axis, end = p.get("axis", 1), p.get("end_axis", -1)
        return "" if (axis, end) == (1, -1) else f"axis={axis} end_axis={end}"
