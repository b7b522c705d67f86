"""Softmax over ``axis`` (default 1), computed as Caffe does: subtract the max, exponentiate, divide by the sum."""

from __future__ import annotations

from caffeport.ir import Layer
from caffeport.layers.registry import SameShape, register


@register("Softmax")
class Softmax(SameShape):
    param = "softmax_param"

    def key_params(self, layer: Layer) -> str:
        axis = self.params_of(layer).get("axis", 1)
        return f"axis={axis}" if axis != 1 else ""
