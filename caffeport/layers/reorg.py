"""Reorg: YOLOv2's "passthrough" layer (``reorg_param { stride reverse }``), darknet's index formula exactly.

Sources: ``src/caffe/layers/reorg_layer.cpp`` of choasup/caffe-yolo9000
(``stride`` default 2, no ``reverse``) and of gklz1982/caffe-yolov2 (with
``reorg_cpu`` in ``include/caffe/layers/reorg_layer.hpp``; ``stride``
required, ``reverse`` default false). Both call darknet's ``reorg_cpu`` the
way darknet's ``forward_reorg_layer`` does: with the *bottom's* ``w, h, c``
and ``forward = reverse``.

That formula, for a bottom ``(N, C, H, W)``, stride ``s`` and ``C' = C / s^2``,
pairs bottom-shaped position ``(n, k, j, i)`` (flat index over ``C, H, W``)
with position ``(n, k % C', j * s + o // s, i * s + o % s)`` of a
``(N, C', H * s, W * s)`` array, where ``o = k // C'``.

- ``reverse: false`` (the usual one): the top's flat buffer at the first
  position takes the value at the second one, where the *bottom's* flat buffer
  is read as if it were ``(N, C', H * s, W * s)``; the buffer is then the top
  ``(N, C * s^2, H / s, W / s)``. This is not a plain space-to-depth: the
  bottom's memory is reinterpreted before the gather, which is what darknet
  (and so every YOLOv2 weight file) computes.
- ``reverse: true``: the other way round, a true depth-to-space: the top
  ``(N, C', H * s, W * s)`` gets ``top[n, k % C', j*s + o//s, i*s + o%s] = bottom[n, k, j, i]``.

Either way the formula only stays inside the blobs when ``s^2`` divides ``C``
and (``reverse: false``) ``s`` divides ``H`` and ``W``: choasup's ``Reshape``
CHECKs the element counts match; gklz1982's would read and write out of bounds.
These are refused.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, ints
from caffeport.layers.registry import LayerType, Tops, register


def _stride_reverse(layer: Layer) -> tuple[int, bool]:
    p = layer.param("reorg_param")
    strides = ints(p.get("stride"))
    stride = strides[-1] if strides else 2
    if stride < 1:
        raise error(layer, f"reorg_param.stride must be >= 1, got {stride}")
    reverse = p.get("reverse", False)
    if isinstance(reverse, (list, tuple)):
        reverse = reverse[-1] if reverse else False
    if isinstance(reverse, str):
        reverse = reverse.lower() in ("true", "1")
    return stride, bool(reverse)


def reorg_shape(layer: Layer, shape: Shape) -> Shape:
    """The top shape for bottom ``shape``, refusing sizes the index formula would run out of the blobs with."""
    if len(shape) != 4:
        raise error(layer, f"Reorg needs a 4-D input (N, C, H, W), got {shape}")
    n, c, h, w = shape
    stride, reverse = _stride_reverse(layer)
    if c % (stride * stride):
        raise error(layer, f"Reorg stride {stride}: the {c} channels are not a multiple of {stride * stride}")
    if reverse:
        return (n, c // (stride * stride), h * stride, w * stride)
    if h % stride or w % stride:
        raise error(layer, f"Reorg stride {stride} does not divide the {h}x{w} input")
    return (n, c * stride * stride, h // stride, w // stride)


@register("Reorg")
class Reorg(LayerType):
    """See the module docstring."""

    param = "reorg_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [reorg_shape(layer, bottoms[0])]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], dtype=np.float32)
        top_shape = reorg_shape(layer, x.shape)
        stride, reverse = _stride_reverse(layer)
        n, c, h, w = x.shape
        c2 = c // (stride * stride)
        if reverse:
            # bottom channel k = (oy * s + ox) * C' + c2 lands at (c2, j * s + oy, i * s + ox)
            blocks = x.reshape(n, stride, stride, c2, h, w).transpose(0, 3, 4, 1, 5, 2)
        else:
            # the bottom's buffer read as (N, C', H*s, W*s) = [n, c2, j, oy, i, ox], gathered into bottom order
            # (n, k = (oy * s + ox) * C' + c2, j, i)
            blocks = x.reshape(n, c2, h, stride, w, stride).transpose(0, 3, 5, 1, 2, 4)
        return [np.ascontiguousarray(blocks).reshape(top_shape)]

    def key_params(self, layer: Layer) -> str:
        try:
            stride, reverse = _stride_reverse(layer)
        except ShapeInferenceError:  # inspect describes what it can; the shape rule reports the error
            return "stride=?"
        return f"stride={stride}" + (" reverse" if reverse else "")
