"""Reshape: axes [axis, axis + num_axes) are replaced by ``shape``; a 0 copies the input's dim, one -1 is inferred.

``ReshapeLayer`` (BVLC): ``axis`` may be negative (-1 is just past the last
axis, so new dims can be appended) and ``num_axes`` -1 means "to the end". A 0
in ``shape`` copies the bottom's dim at the same position (``axis + i``); one
-1 takes whatever count is left. The top shares the bottom's data, so the
forward is a plain C-order reshape, its shape worked out again from the bottom
actually fed (a new batch size flows through a 0 or -1).
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, proto_shape
from caffeport.layers.registry import LayerType, Tops, register


@register("Reshape")
class Reshape(LayerType):
    param = "reshape_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        p = self.params_of(layer)
        dims = list(proto_shape(p.get("shape", {})))
        axis, num_axes = int(p.get("axis", 0)), int(p.get("num_axes", -1))
        start = axis if axis >= 0 else len(shape) + axis + 1  # may equal ndim: insert at the end
        if not 0 <= start <= len(shape):
            raise error(layer, f"axis {axis} is out of range for a {len(shape)}-D input")
        if num_axes < -1:
            raise error(layer, f"num_axes must be >= 0 or -1, got {num_axes}")
        end = len(shape) if num_axes == -1 else start + num_axes
        if end > len(shape):
            raise error(layer, f"axis + num_axes = {end} is out of range for a {len(shape)}-D input")
        if dims.count(-1) > 1 or any(d < -1 for d in dims):
            raise error(layer, f"reshape_param.shape {dims} may hold only one -1 and no other negatives")
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= len(shape):
                    raise error(layer, f"shape dim {i} is 0 but the input has no axis {start + i} to copy")
                dims[i] = shape[start + i]
        top = [*shape[:start], *dims, *shape[end:]]
        total = math.prod(shape)
        if -1 in dims:
            explicit = math.prod(d for d in top if d != -1)
            if explicit == 0 or total % explicit:
                raise error(layer, f"input count {total} is not divisible by the given dims' product {explicit}")
            top[start + dims.index(-1)] = total // explicit
        if math.prod(top) != total:
            raise error(layer, f"output {tuple(top)} has {math.prod(top)} elements, input {shape} has {total}")
        return [tuple(top)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        (shape,) = self.infer(layer, [bottoms[0].shape])
        assert shape is not None
        return [np.ascontiguousarray(bottoms[0], dtype=np.float32).reshape(shape)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        parts = [f"shape=[{', '.join(map(str, proto_shape(p.get('shape', {}))))}]"]
        if int(p.get("axis", 0)) != 0:
            parts.append(f"axis={p['axis']}")
        if int(p.get("num_axes", -1)) != -1:
            parts.append(f"num_axes={p['num_axes']}")
        return " ".join(parts)
