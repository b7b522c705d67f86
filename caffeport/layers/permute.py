"""Permute (SSD fork): the listed ``order`` first, the unlisted axes after it in their own order."""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, ints
from caffeport.layers.registry import LayerType, Tops, register


def full_order(layer: Layer, ndim: int) -> list[int]:
    """``permute_param.order`` completed with the axes it leaves out, in their own order."""
    order = ints(layer.param("permute_param").get("order"))
    if len(set(order)) != len(order) or any(not 0 <= o < ndim for o in order):
        raise error(layer, f"permute order {order} must be distinct axes of a {ndim}-D input")
    return order + [i for i in range(ndim) if i not in order]


@register("Permute")
class Permute(LayerType):
    param = "permute_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        return [tuple(shape[i] for i in full_order(layer, len(shape)))]
