"""PReLU: ONNX ``PRelu`` with the slope shaped to broadcast over axis 1, or one value with ``channel_shared``."""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("PReLU")
class PReLU(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        slope = ctx.blob(0).reshape(-1)
        ndim = len(ctx.shape)
        if ctx.params().get("channel_shared", False):
            slope = slope[:1]  # (1,) broadcasts over everything
        else:
            slope = slope.reshape(ctx.shape[1], *([1] * (ndim - 2)))
        return [ctx.op("PRelu", [ctx.x, ctx.const(slope, "slope")])]
