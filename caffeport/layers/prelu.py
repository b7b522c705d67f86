"""PReLU: ``max(0, x) + slope * min(0, x)`` with one slope per channel (axis 1), or one for all with ``channel_shared``.

Blobs (``PReLULayer::LayerSetUp``): the slope, ``(C,)``, or 0-D with ``channel_shared``.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import channels
from caffeport.layers.registry import BlobShape, SameShape, register


@register("PReLU")
class PReLU(SameShape):
    param = "prelu_param"

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        if self.params_of(layer).get("channel_shared", False):
            return [()]
        return [(channels(bottoms[0] if bottoms else None),)]

    def key_params(self, layer: Layer) -> str:
        return "channel_shared" if self.params_of(layer).get("channel_shared") else ""
