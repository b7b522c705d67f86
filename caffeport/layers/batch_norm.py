"""BatchNorm at TEST time (``use_global_stats``): ``(x - mean / s) / sqrt(var / s + eps)`` per channel (axis 1).

Blobs (``BatchNormLayer::LayerSetUp``): the running mean ``(C,)``, the running
variance ``(C,)`` and the moving-average scale factor ``s`` ``(1,)``; Caffe
stores the sums un-normalized, so both are divided by ``s`` (a factor of 0
means mean and variance are taken as 0). ``eps`` defaults to 1e-5. The learned
affine part, where a model has one, is a separate Scale layer.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import channels
from caffeport.layers.registry import BlobShape, SameShape, register


@register("BatchNorm")
class BatchNorm(SameShape):
    param = "batch_norm_param"

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        c = channels(bottoms[0] if bottoms else None)
        return [(c,), (c,), (1,)]

    def key_params(self, layer: Layer) -> str:
        return f"eps={self.params_of(layer).get('eps', 1e-5):g}"
