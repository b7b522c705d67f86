"""Concat: bottoms joined along ``axis`` (default 1; the legacy ``concat_dim`` may not be negative).

``ConcatLayer`` (BVLC): every bottom has the same number of axes and the same
dims except along the concat axis; the top holds the bottoms one after the
other along it, in bottom order. ``concat_dim``, when given, wins and must lie
in ``[0, num_axes)``; ``axis`` follows ``CanonicalAxisIndex`` (negatives from
the end). One bottom is passed through.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error
from caffeport.layers.registry import LayerType, Tops, register


def concat_axis(layer: Layer, ndim: int) -> int:
    p = layer.param("concat_param")
    if p.get("concat_dim") is not None:
        axis = int(p["concat_dim"])
        if not 0 <= axis < ndim:
            raise error(layer, f"concat_dim {axis} is out of range for a {ndim}-D input")
        return axis
    return axis_index(layer, p.get("axis", 1), ndim)


@register("Concat")
class Concat(LayerType):
    param = "concat_param"
    bottoms = None

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        first = bottoms[0]
        axis = concat_axis(layer, len(first))
        for name, shape in zip(layer.bottoms[1:], bottoms[1:], strict=False):
            if len(shape) != len(first) or any(shape[i] != first[i] for i in range(len(first)) if i != axis):
                raise error(
                    layer,
                    f"Concat bottoms must match except along axis {axis}: "
                    f"{layer.bottoms[0]!r} is {first}, {name!r} is {shape}",
                )
        return [(*first[:axis], sum(shape[axis] for shape in bottoms), *first[axis + 1 :])]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        self.infer(layer, [b.shape for b in bottoms])  # Caffe's checks, on the shapes actually fed
        axis = concat_axis(layer, bottoms[0].ndim)
        return [np.concatenate(bottoms, axis=axis).astype(np.float32, copy=False)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        if p.get("concat_dim") is not None:
            return f"concat_dim={p['concat_dim']}"
        axis = p.get("axis", 1)
        return f"axis={axis}" if axis != 1 else ""
