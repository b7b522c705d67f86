"""Tile: the ``axis`` dim (default 1) is repeated ``tiles`` times, whole blocks (``np.tile`` along that axis)."""

from __future__ import annotations

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
