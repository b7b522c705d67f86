"""DummyData: constant tops (only constant fillers are reproduced, as the reference refuses random ones)."""

from __future__ import annotations

import numpy as np

from caffeport.layers import layer_type
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("DummyData")
class DummyData(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        fillers = layer_type("DummyData").fillers(ctx.layer)  # type: ignore[attr-defined]
        return [ctx.const(np.full(shape, np.float32(filler.get("value", 0.0)), np.float32), "value")
                for shape, filler in zip(ctx.top_shapes, fillers, strict=True)]
