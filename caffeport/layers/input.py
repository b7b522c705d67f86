"""Input: the net's inputs, shaped by ``input_param.shape`` (once per top, or one shape shared by all tops)."""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, proto_shape, shape_list
from caffeport.layers.registry import LayerType, Tops, register


@register("Input")
class Input(LayerType):
    param = "input_param"
    bottoms = 0

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shapes = shape_list(self.params_of(layer).get("shape"))
        if not shapes:
            return []
        if len(shapes) not in (1, len(layer.tops)):
            raise error(layer, f"input_param has {len(shapes)} shapes for {len(layer.tops)} tops")
        return [proto_shape(shapes[0 if len(shapes) == 1 else i]) for i in range(len(layer.tops))]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        """Never called: `caffeport.run` feeds the net inputs in place of this layer's tops."""
        raise AssertionError("Input tops are fed by run()")
