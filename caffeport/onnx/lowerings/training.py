"""Silence: no tops, nothing to compute. (Losses and Accuracy have no reference forward: refused up front.)"""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Silence")
class Silence(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        return []
