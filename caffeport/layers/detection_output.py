"""DetectionOutput (SSD fork): decode the location predictions against the priors, per-class NMS, keep_top_k.

The top is (1, 1, N, 7) rows of (image id, label, score, xmin, ymin, xmax,
ymax); N depends on how many detections survive, so the shape is unknown
before a forward (and (1, 1, 1, 7) filled with -1 when none does).
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.registry import LayerType, Tops, register


@register("DetectionOutput")
class DetectionOutput(LayerType):
    param = "detection_output_param"
    bottoms = 0

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return []  # known only after a forward
