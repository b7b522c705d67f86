"""Reduction: SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` (default 0) on, times ``coeff``.

``ReductionLayer`` (BVLC): the top keeps the axes before ``axis`` (a 0-D top
for axis 0) and every value is one reduction over the ``dim`` trailing values:
SUM their sum, ASUM the sum of absolute values, SUMSQ the sum of squares, MEAN
the sum times ``coeff / dim`` (Caffe folds the 1 / dim into the coefficient,
in float). The result is scaled by ``coeff`` (default 1) when it is not 1.
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, enum_name
from caffeport.layers.registry import LayerType, Tops, register

#: ReductionOp's enum numbers, for params that arrive as ints
OPERATIONS = {1: "SUM", 2: "ASUM", 3: "SUMSQ", 4: "MEAN"}


@register("Reduction")
class Reduction(LayerType):
    param = "reduction_param"

    def operation(self, layer: Layer) -> str:
        op = enum_name(self.params_of(layer).get("operation"), OPERATIONS, "SUM")
        if op not in OPERATIONS.values():
            raise self.error(layer, f"unknown reduction_param.operation {op!r} (SUM, ASUM, SUMSQ or MEAN)")
        return op

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        self.operation(layer)
        axis = axis_index(layer, self.params_of(layer).get("axis", 0), len(bottoms[0]))
        return [bottoms[0][:axis]]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        p = self.params_of(layer)
        op = self.operation(layer)
        axis = axis_index(layer, p.get("axis", 0), x.ndim)
        num, dim = math.prod(x.shape[:axis]), math.prod(x.shape[axis:])
        rows = np.ascontiguousarray(x, dtype=np.float32).reshape(num, dim)
        coeff = np.float32(p.get("coeff", 1.0))
        if op == "MEAN":
            coeff = np.float32(coeff / np.float32(dim))
        with np.errstate(all="ignore"):
            if op == "ASUM":
                top = np.abs(rows).sum(axis=1, dtype=np.float32)
            elif op == "SUMSQ":
                top = (rows * rows).sum(axis=1, dtype=np.float32)
            else:
                top = rows.sum(axis=1, dtype=np.float32)
            if coeff != 1:
                top = top * coeff
        return [np.asarray(top, dtype=np.float32).reshape(x.shape[:axis])]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        op = p.get("operation", "SUM")
        op = enum_name(op, OPERATIONS, "SUM")
        parts = [str(op), f"axis={p.get('axis', 0)}"]
        if p.get("coeff", 1.0) != 1.0:
            parts.append(f"coeff={float(p['coeff']):g}")
        return " ".join(parts)
