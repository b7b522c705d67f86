"""SPP: (being written)."""

from __future__ import annotations

from caffeport.layers.registry import LayerType, register


@register("SPP")
class SPP(LayerType):
    pass
