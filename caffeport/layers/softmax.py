"""Softmax over ``axis`` (default 1), computed as Caffe does: subtract the max, exponentiate, divide by the sum.

``SoftmaxLayer::Forward_cpu`` takes, for every position of the other axes,
the max over ``axis`` and subtracts it before ``exp`` (so large inputs do not
overflow), then divides by the sum of the exponentials over ``axis``; all in
float32. The axis is canonical (negatives count from the end).
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer
from caffeport.layers.fields import axis_index
from caffeport.layers.registry import SameShape, register


@register("Softmax")
class Softmax(SameShape):
    """See the module docstring."""

    param = "softmax_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        axis = axis_index(layer, self.params_of(layer).get("axis", 1), x.ndim)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return [e / e.sum(axis=axis, keepdims=True, dtype=np.float32)]

    def key_params(self, layer: Layer) -> str:
        axis = self.params_of(layer).get("axis", 1)
        return f"axis={axis}" if axis != 1 else ""
