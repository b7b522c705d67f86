"""Dropout: the identity at TEST time.

``DropoutLayer::Forward_cpu`` (BVLC) masks and scales by ``1 / (1 - ratio)``
only in the TRAIN phase (inverted dropout); at TEST it copies the bottom, so
nothing is rescaled here and ``dropout_ratio`` does not matter.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer
from caffeport.layers.registry import SameShape, register


@register("Dropout")
class Dropout(SameShape):
    param = "dropout_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return [np.array(bottoms[0], dtype=np.float32)]  # a copy: Caffe's caffe_copy, and the bottom stays untouched
