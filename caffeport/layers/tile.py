"""Tile: the ``axis`` dim (default 1) is repeated ``tiles`` times, whole blocks (``np.tile`` along that axis).

``TileLayer`` (BVLC): ``tiles`` is required and positive. For each index of
the axes before ``axis``, the block of everything from ``axis`` on is copied
``tiles`` times in a row, so ``[a, b]`` tiled 2 along its axis is
``[a, b, a, b]`` (not ``[a, a, b, b]``).
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, positive
from caffeport.layers.registry import LayerType, Tops, register


@register("Tile")
class Tile(LayerType):
    param = "tile_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        p = self.params_of(layer)
        axis = axis_index(layer, p.get("axis", 1), len(shape))
        tiles = positive(layer, p, "tiles", "tile_param")
        return [(*shape[:axis], shape[axis] * tiles, *shape[axis + 1 :])]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        (shape,) = self.infer(layer, [x.shape])
        assert shape is not None
        p = self.params_of(layer)
        axis = axis_index(layer, p.get("axis", 1), x.ndim)
        tiles = positive(layer, p, "tiles", "tile_param")
        outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
        blocks = np.broadcast_to(x.reshape(outer, 1, inner), (outer, tiles, inner))
        return [np.ascontiguousarray(blocks, dtype=np.float32).reshape(shape)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"axis={p.get('axis', 1)} tiles={p.get('tiles', '?')}"
