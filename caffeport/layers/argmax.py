"""ArgMax: the ``top_k`` indices (and with ``out_max_val`` the values) of the largest entries.

Shapes (``ArgMaxLayer::Reshape``): with ``axis``, that axis becomes ``top_k``
(values instead of indices with ``out_max_val``); without, the input is
flattened per sample and the top is (N, 1 or 2, top_k, 1...) over at least 3 axes.

Forward (BVLC ``argmax_layer.cpp``): for every line of values (along ``axis``,
or all of a sample), Caffe pairs each value with its index and partially sorts
the pairs with ``std::greater``, i.e. by value descending and, among equal
values, by index descending: ties put the LARGER index first. The top holds
the indices as floats; with ``out_max_val`` and an axis, the values instead;
with ``out_max_val`` and no axis, per sample the ``top_k`` indices followed by
the ``top_k`` values (channel 0 indices, channel 1 values). NaN compares false
in Caffe, which leaves its place unspecified; here NaN sorts above everything.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error
from caffeport.layers.registry import LayerType, Tops, register


def top_k_lines(lines: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (index, value) pairs of every row of the 2-D ``lines``, in ``std::greater`` pair order."""
    indices = np.broadcast_to(np.arange(lines.shape[1]), lines.shape)
    ascending = np.lexsort((indices, lines), axis=-1)  # by value, then by index, both ascending
    best = ascending[:, ::-1][:, :k]
    return best, np.take_along_axis(lines, best, axis=1)


@register("ArgMax")
class ArgMax(LayerType):
    param = "argmax_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        p = self.params_of(layer)
        top_k = int(p.get("top_k", 1))
        if p.get("axis") is not None:
            axis = axis_index(layer, p["axis"], len(shape))
            if not 1 <= top_k <= shape[axis]:
                raise error(layer, f"top_k {top_k} must be in 1..{shape[axis]} (axis {axis})")
            return [(*shape[:axis], top_k, *shape[axis + 1 :])]
        if not 1 <= top_k <= math.prod(shape[1:]):
            raise error(layer, f"top_k {top_k} must be in 1..{math.prod(shape[1:])}")
        top = [1] * max(len(shape), 3)
        top[0], top[1], top[2] = shape[0], 2 if p.get("out_max_val", False) else 1, top_k
        return [tuple(top)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], dtype=np.float32)
        (shape,) = self.infer(layer, [x.shape])  # Caffe's checks on the shape actually fed
        assert shape is not None
        p = self.params_of(layer)
        top_k = int(p.get("top_k", 1))
        out_max_val = bool(p.get("out_max_val", False))
        if p.get("axis") is not None:
            axis = axis_index(layer, p["axis"], x.ndim)
            moved = np.moveaxis(x, axis, -1)
            best, values = top_k_lines(moved.reshape(-1, x.shape[axis]), top_k)
            chosen = values if out_max_val else best.astype(np.float32)
            top = np.moveaxis(chosen.reshape(*moved.shape[:-1], top_k), -1, axis)
            return [np.ascontiguousarray(top, dtype=np.float32)]
        best, values = top_k_lines(x.reshape(x.shape[0], -1), top_k)
        parts = [best.astype(np.float32), values] if out_max_val else [best.astype(np.float32)]
        return [np.stack(parts, axis=1).astype(np.float32).reshape(shape)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        parts = [f"top_k={p.get('top_k', 1)}"]
        parts.append(f"axis={p['axis']}" if p.get("axis") is not None else "per-sample")
        if p.get("out_max_val", False):
            parts.append("out_max_val")
        return " ".join(parts)
