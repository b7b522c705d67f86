"""ShuffleChannel: ``Reshape`` (N, group, C / group, H * W), ``Transpose`` the two group axes, ``Reshape`` back 4-D."""

from __future__ import annotations

from caffeport.layers.shuffle_channel import shuffle_group
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("ShuffleChannel")
class ShuffleChannel(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        _, c, h, w = ctx.top_shapes[0]
        group = shuffle_group(ctx.layer, c)
        g = ctx.graph
        grouped = g.reshape(ctx.x, [0, group, c // group, h * w], "grouped")
        swapped = ctx.op("Transpose", [grouped], "swapped", perm=[0, 2, 1, 3])
        return [g.reshape(swapped, [0, c, h, w], "shuffled")]
