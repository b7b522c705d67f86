"""Blobs in the shape Caffe's own layers hold them, as pycaffe's ``net.params`` showed them.

Files from Caffe's V1 days store every blob 4-D (an InnerProduct weight as
(1, 1, out, in), a bias as (1, 1, 1, C)); when Caffe loads such a file it
copies the values into blobs of the layer's own shape. Tools built on
pycaffe (the older caffe_weight_converter's pickle among them) therefore saw
(out, in) and (C,). This pass gives the same shapes, without touching values.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Net
from caffeport.layers import layer_type
from caffeport.layers.layout import note
from caffeport.transforms.registry import Options, register_pass


def _without_leading_ones(blob: np.ndarray, rank: int) -> np.ndarray:
    """``blob`` reshaped to its last ``rank`` axes when the others are all 1 (a legacy 4-D blob)."""
    if blob.ndim <= rank or any(d != 1 for d in blob.shape[: blob.ndim - rank]):
        return blob
    return blob.reshape(blob.shape[blob.ndim - rank:])


@register_pass("native_shapes")
def native_shapes(net: Net, options: Options) -> None:
    """Each blob in the rank its layer type's ``LayerSetUp`` gives it (`LayerType.blob_shapes`), legacy 1s dropped."""
    for layer in net.layers:
        if not layer.blobs:
            continue
        expected = layer_type(layer.type).blob_shapes(layer, list(layer.bottom_shapes) or [None] * len(layer.bottoms))
        if expected is None or len(expected) != len(layer.blobs):
            continue  # a type caffeport does not know: as stored
        before = [b.shape for b in layer.blobs]
        layer.blobs = [_without_leading_ones(np.asarray(b), len(shape)) for b, shape in zip(layer.blobs, expected)]
        after = [b.shape for b in layer.blobs]
        if after != before:
            note(net, layer, "native-shapes", f"{before} -> {after} (legacy 4-D blobs in the layer's own shape)")
