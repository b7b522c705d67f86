"""Permute (SSD fork): the listed ``order`` first, the unlisted axes after it in their own order.

``PermuteLayer`` (weiliu89/caffe branch ssd, ``permute_layer.cpp``): each
listed axis must be below ``num_axes`` and appear once; the axes not listed
follow in increasing order. Top axis ``j`` is bottom axis ``order[j]`` and the
data is moved accordingly (element at top index ``(i_0, ..., i_n)`` comes from
the bottom index with ``i_j`` on axis ``order[j]``), which is
``numpy.transpose(x, order)``. An identity order shares the data.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, ints
from caffeport.layers.registry import LayerType, Tops, register


def full_order(layer: Layer, ndim: int) -> list[int]:
    """``permute_param.order`` completed with the axes it leaves out, in their own order."""
    order = ints(layer.param("permute_param").get("order"))
    if len(set(order)) != len(order) or any(not 0 <= o < ndim for o in order):
        raise error(layer, f"permute order {order} must be distinct axes of a {ndim}-D input")
    return order + [i for i in range(ndim) if i not in order]


@register("Permute")
class Permute(LayerType):
    param = "permute_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        return [tuple(shape[i] for i in full_order(layer, len(shape)))]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        return [np.ascontiguousarray(np.transpose(x, full_order(layer, x.ndim)), dtype=np.float32)]

    def key_params(self, layer: Layer) -> str:
        return f"order=[{', '.join(map(str, ints(self.params_of(layer).get('order'))))}]"
