"""MVN: mean-variance normalization per sample (and per channel unless ``across_channels``); no blobs."""

from __future__ import annotations

from caffeport.layers.registry import SameShape, register


@register("MVN")
class MVN(SameShape):
    param = "mvn_param"
