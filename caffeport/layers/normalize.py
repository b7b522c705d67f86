"""Normalize (SSD fork): L2 norm over channels (``across_spatial: false``) or the whole sample, then a learned scale.

Blobs (``NormalizeLayer::LayerSetUp``): the scale, ``(1,)`` with
``channel_shared`` (the default) or ``(C,)``.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import channels
from caffeport.layers.registry import BlobShape, SameShape, register


@register("Normalize")
class Normalize(SameShape):
    param = "norm_param"

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        if self.params_of(layer).get("channel_shared", True):
            return [(1,)]
        return [(channels(bottoms[0] if bottoms else None),)]
