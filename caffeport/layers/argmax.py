"""ArgMax: the ``top_k`` indices (and with ``out_max_val`` the values) of the largest entries.

Shapes (``ArgMaxLayer::Reshape``): with ``axis``, that axis becomes ``top_k``
(values instead of indices with ``out_max_val``); without, the input is
flattened per sample and the top is (N, 1 or 2, top_k, 1...) over at least 3 axes.
"""

from __future__ import annotations

import math

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error
from caffeport.layers.registry import LayerType, Tops, register


@register("ArgMax")
class ArgMax(LayerType):
    param = "argmax_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        p = self.params_of(layer)
        top_k = int(p.get("top_k", 1))
        if p.get("axis") is not None:
            axis = axis_index(layer, p["axis"], len(shape))
            if not 1 <= top_k <= shape[axis]:
                raise error(layer, f"top_k {top_k} must be in 1..{shape[axis]} (axis {axis})")
            return [(*shape[:axis], top_k, *shape[axis + 1 :])]
        if not 1 <= top_k <= math.prod(shape[1:]):
            raise error(layer, f"top_k {top_k} must be in 1..{math.prod(shape[1:])}")
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], 2 if p.get("out_max_val", False) else 1, top_k
        return [tuple(top)]
