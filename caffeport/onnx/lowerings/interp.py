"""Interp (DeepLab / PSPNet): ``Slice`` for the ``pad_beg``/``pad_end`` crop, then ``Resize`` linear, align_corners.

Caffe's ``caffe_cpu_interp2`` reads output position ``y`` at input
``y * (in - 1) / (out - 1)`` (0 for a single output row) and blends the two
neighbours bilinearly: ONNX ``Resize`` with ``mode: linear`` and
``coordinate_transformation_mode: align_corners`` computes the same
positions and weights. Same-size crops are copied, as in Caffe. The output
size is Caffe's rule (`caffeport.layers.interp.interp_size`), given as
``sizes`` (batch and channels copied from the input's shape when the batch
is dynamic). A 2- or 3-D input is first reshaped to the legacy 4-D Caffe
reads it through.
"""

from __future__ import annotations

from caffeport.layers.interp import _legacy4, _pads, interp_size
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("Interp")
class Interp(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        g = ctx.graph
        n, c, h, w = _legacy4(ctx.layer, ctx.shape)
        h_eff, w_eff, out_h, out_w = interp_size(ctx.layer, h, w)
        x = ctx.x if len(ctx.shape) == 4 else g.reshape(ctx.x, [0, c, h, w], "legacy4")
        start = -_pads(ctx.layer, ctx.params())[0]
        if (h_eff, w_eff) != (h, w):
            x = g.slice(x, [start, start], [start + h_eff, start + w_eff], [2, 3], hint="crop")
        if (h_eff, w_eff) == (out_h, out_w):
            return [ctx.identity(x)]
        if ctx.dynamic_batch:
            lead = g.slice(ctx.op("Shape", [x], "shape"), [0], [2], [0], hint="batch_channels")
            sizes = ctx.op("Concat", [lead, g.ints([out_h, out_w], "hw")], "sizes", axis=0)
        else:
            sizes = g.ints([n, c, out_h, out_w], "sizes")
        return [ctx.op("Resize", [x, "", "", sizes], "resize", mode="linear",
                       coordinate_transformation_mode="align_corners")]
