"""Slice: ``axis`` (default 1; legacy ``slice_dim``) cut at ``slice_point`` (one fewer than the tops) or evenly.

``SliceLayer`` (BVLC): with ``slice_point`` the points must increase strictly
and there is one fewer than the tops; top ``i`` holds ``[point[i-1],
point[i])`` along the axis (from 0, to the axis size). Without points the axis
size must divide evenly among the tops. ``slice_dim``, when given, wins and
may not be negative. One top is the bottom itself.
"""

from __future__ import annotations

import itertools

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error, ints
from caffeport.layers.registry import LayerType, Tops, register


def slice_axis(layer: Layer, ndim: int) -> int:
    p = layer.param("slice_param")
    if p.get("slice_dim") is not None:
        axis = int(p["slice_dim"])
        if not 0 <= axis < ndim:
            raise error(layer, f"slice_dim {axis} is out of range for a {ndim}-D input")
        return axis
    return axis_index(layer, p.get("axis", 1), ndim)


def slice_sizes(layer: Layer, shape: Shape) -> list[int]:
    """The size of each top along the slice axis."""
    axis = slice_axis(layer, len(shape))
    size, count = shape[axis], len(layer.tops)
    points = ints(layer.param("slice_param").get("slice_point"))
    if points:
        if len(points) != count - 1:
            raise error(layer, f"{len(points)} slice points for {count} tops (need {count - 1})")
        sizes = [b - a for a, b in itertools.pairwise([0, *points, size])]
        if any(s <= 0 for s in sizes):
            raise error(layer, f"slice points {points} must increase strictly within axis size {size}")
        return sizes
    if count and size % count == 0:
        return [size // count] * count
    raise error(layer, f"{count} tops do not evenly divide axis {axis} of size {size}")


@register("Slice")
class Slice(LayerType):
    param = "slice_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        axis = slice_axis(layer, len(shape))
        return [(*shape[:axis], s, *shape[axis + 1 :]) for s in slice_sizes(layer, shape)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        axis = slice_axis(layer, x.ndim)
        cuts = list(itertools.accumulate(slice_sizes(layer, x.shape)))[:-1]
        return [np.ascontiguousarray(part, dtype=np.float32) for part in np.split(x, cuts, axis=axis)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        where = f"slice_dim={p['slice_dim']}" if p.get("slice_dim") is not None else f"axis={p.get('axis', 1)}"
        points = ints(p.get("slice_point"))
        return f"{where} points=[{', '.join(map(str, points))}]" if points else f"{where} even"
