"""DummyData: constant-filled tops, shaped by ``shape`` (once or per top) or the legacy num/channels/height/width."""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, ints, proto_shape, shape_list
from caffeport.layers.registry import LayerType, Tops, register


@register("DummyData")
class DummyData(LayerType):
    param = "dummy_data_param"
    bottoms = 0

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        p = self.params_of(layer)
        count = len(layer.tops)
        legacy = [ints(p.get(key)) for key in ("num", "channels", "height", "width")]
        if any(legacy):
            if any(len(values) not in (1, count) for values in legacy):
                raise error(layer, f"legacy dims must be given once or once per top ({count} tops)")
            return [tuple(values[0 if len(values) == 1 else i] for values in legacy) for i in range(count)]
        shapes = shape_list(p.get("shape"))
        if len(shapes) not in (1, count):
            raise error(layer, f"dummy_data_param has {len(shapes)} shapes for {count} tops")
        return [proto_shape(shapes[0 if len(shapes) == 1 else i]) for i in range(count)]
