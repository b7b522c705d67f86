"""DummyData: constant-filled tops, shaped by ``shape`` (once or per top) or the legacy num/channels/height/width.

``DummyDataLayer`` (BVLC): ``data_filler`` is given 0 times (every top is the
constant 0), once (that filler for every top) or once per top; any other count
is a ``CHECK`` failure, as is mixing ``shape`` with the legacy dims. A
``constant`` filler writes its ``value`` (default 0) once at set-up and the
top keeps it; every other filler (gaussian, uniform, xavier, msra,
positive_unitball, bilinear) is drawn again at every forward, so only constant
fillers are reproduced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.errors import ShapeInferenceError
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
            if shape_list(p.get("shape")):
                raise error(layer, "dummy_data_param gives both shape and the legacy num/channels/height/width")
            if any(len(values) not in (1, count) for values in legacy):
                raise error(layer, f"legacy dims must be given once or once per top ({count} tops)")
            return [tuple(values[0 if len(values) == 1 else i] for values in legacy) for i in range(count)]
        shapes = shape_list(p.get("shape"))
        if len(shapes) not in (1, count):
            raise error(layer, f"dummy_data_param has {len(shapes)} shapes for {count} tops")
        return [proto_shape(shapes[0 if len(shapes) == 1 else i]) for i in range(count)]

    def fillers(self, layer: Layer) -> list[dict[str, Any]]:
        """The filler of each top (a ``data_filler`` count other than 0, 1 or one per top is refused)."""
        given = shape_list(self.params_of(layer).get("data_filler"))
        count = len(layer.tops)
        if len(given) not in (0, 1, count):
            raise self.error(layer, f"dummy_data_param has {len(given)} data_filler for {count} tops "
                                    "(Caffe takes 0, 1 or one per top)")
        if not given:
            return [{"type": "constant", "value": 0.0}] * count
        return [given[0 if len(given) == 1 else i] for i in range(count)]

    def unsupported(self, layer: Layer) -> str | None:
        try:
            fillers = self.fillers(layer)
        except ShapeInferenceError:  # a broken count, reported as an error when run reaches the layer
            return super().unsupported(layer)
        kinds = sorted({str(f.get("type", "constant")) for f in fillers} - {"constant"})
        if kinds:
            return (f"DummyData filler {', '.join(map(repr, kinds))} draws new values at every forward in Caffe; "
                    "only constant fillers are reproduced")
        return super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        shapes = self.infer(layer, [])
        assert shapes is not None
        tops = []
        for shape, filler in zip(shapes, self.fillers(layer), strict=True):
            assert shape is not None
            kind = str(filler.get("type", "constant"))
            if kind != "constant":
                raise self.error(layer, f"DummyData filler {kind!r} is random in Caffe; not reproduced")
            if int(filler.get("sparse", -1)) != -1:
                raise self.error(layer, "the constant filler does not take sparse (Caffe CHECKs sparse == -1)")
            tops.append(np.full(shape, np.float32(filler.get("value", 0.0)), dtype=np.float32))
        return tops

    def key_params(self, layer: Layer) -> str:
        try:
            fillers = self.fillers(layer)
        except ShapeInferenceError:  # inspect describes what it can; the forward reports the error
            return "data_filler=?"
        described = []
        for f in fillers:
            kind = str(f.get("type", "constant"))
            described.append(f"constant {float(f.get('value', 0.0)):g}" if kind == "constant" else kind)
        unique = list(dict.fromkeys(described))
        return f"filler={', '.join(unique)}"
