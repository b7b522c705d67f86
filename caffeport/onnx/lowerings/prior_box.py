"""PriorBox (SSD): folded to a constant, since its top depends on the bottoms' shapes only.

`caffeport.onnx.export` computes the priors with the reference's own forward
(`caffeport.layers.prior_box`, Caffe's rules: int sizes, float32 centres,
double corners) and writes them as an initializer; so does every layer that
reads only such constants (SSD's Concat of the priors), which makes
DetectionOutput's priors known at export time.
"""

from __future__ import annotations

from caffeport.onnx.lowerings.registry import Context, Lowering, lowering


@lowering("PriorBox")
class PriorBox(Lowering):
    shape_only = True

    def lower(self, ctx: Context) -> list[str]:
        raise AssertionError("PriorBox is folded to a constant by the export, never lowered")
