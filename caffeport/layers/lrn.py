"""LRN: local response normalization ACROSS_CHANNELS (default) or WITHIN_CHANNEL; no blobs."""

from __future__ import annotations

from caffeport.ir import Layer
from caffeport.layers.registry import SameShape, register


@register("LRN")
class LRN(SameShape):
    param = "lrn_param"

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"{p.get('norm_region', 'ACROSS_CHANNELS')} size={p.get('local_size', 5)}"
