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
from caffeport.layers.layout import note
from caffeport.transforms.registry import Options, register_pass

#: layer types whose blob i (beyond the first) is a per-output vector
_VECTOR_BIASES = frozenset({"Convolution", "Deconvolution", "InnerProduct"})


def _without_leading_ones(blob: np.ndarray, rank: int) -> np.ndarray:
    """``blob`` reshaped to its last ``rank`` axes when the others are all 1 (a legacy 4-D blob)."""
    if blob.ndim <= rank or any(d != 1 for d in blob.shape[: blob.ndim - rank]):
        return blob
    return blob.reshape(blob.shape[blob.ndim - rank:])


@register_pass("native_shapes")
def native_shapes(net: Net, options: Options) -> None:
    for layer in net.layers:
        if layer.type not in _VECTOR_BIASES or not layer.blobs:
            continue
        before = [b.shape for b in layer.blobs]
        weight = layer.blobs[0]
        if layer.type == "InnerProduct":
            weight = _without_leading_ones(np.asarray(weight), 2)
        layer.blobs = [weight, *(_without_leading_ones(np.asarray(b), 1) for b in layer.blobs[1:])]
        after = [b.shape for b in layer.blobs]
        if after != before:
            note(net, layer, "native-shapes", f"{before} -> {after} (legacy 4-D blobs in the layer's own shape)")
