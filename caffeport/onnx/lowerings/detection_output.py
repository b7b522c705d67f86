"""SSD's PriorBox and DetectionOutput: not lowered in this increment, refused by name."""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Refused, lowering


@lowering("PriorBox", "DetectionOutput")
class SSDHead(Refused):
    reason = "SSD DetectionOutput lowering: not yet; use --ssd-heads when it lands"
