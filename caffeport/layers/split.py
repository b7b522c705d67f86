"""Split: every top is the bottom (Caffe inserts these where one blob feeds several layers).

``SplitLayer::Forward_cpu`` shares the bottom's data with each top; here each
top is its own copy, so no consumer can see another's array.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.registry import LayerType, Tops, register


@register("Split")
class Split(LayerType):
    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [bottoms[0]] * len(layer.tops)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return [np.array(bottoms[0], dtype=np.float32) for _ in layer.tops]
