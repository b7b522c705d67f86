"""Eltwise: PROD, SUM (with one ``coeff`` per bottom) or MAX (default SUM) of two or more equally shaped bottoms.

Caffe's rules (BVLC ``eltwise_layer.cpp`` and ``.hpp``):

- at least two bottoms (``MinBottomBlobs``), all of one shape;
- ``coeff`` is either absent (every coefficient 1) or has exactly one value per
  bottom, and PROD takes none (both ``CHECK``ed in ``LayerSetUp``); MAX
  ignores them;
- SUM starts from zero and adds ``coeff[i] * bottom[i]`` in bottom order;
  PROD multiplies the bottoms in order;
- MAX keeps bottom 1 unless bottom 0 is strictly greater, then takes each
  later bottom only where it is strictly greater than the running maximum.
  Written as those comparisons (not ``np.maximum``) so NaN and signed zeros
  come out as in Caffe. ``stable_prod_grad`` only concerns the backward pass.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import enum_name, floats, same_shapes
from caffeport.layers.registry import LayerType, Tops, register

#: EltwiseOp's enum numbers, for params that arrive as ints
OPERATIONS = {0: "PROD", 1: "SUM", 2: "MAX"}


@register("Eltwise")
class Eltwise(LayerType):
    param = "eltwise_param"
    bottoms = None

    def operation(self, layer: Layer) -> str:
        op = enum_name(self.params_of(layer).get("operation"), OPERATIONS, "SUM")
        if op not in OPERATIONS.values():
            raise self.error(layer, f"unknown eltwise_param.operation {op!r} (PROD, SUM or MAX)")
        return op

    def coefficients(self, layer: Layer, count: int) -> list[float]:
        """One coefficient per bottom, checked as ``EltwiseLayer::LayerSetUp`` does."""
        if count < 2:
            raise self.error(layer, f"Eltwise needs at least 2 bottoms, got {count}")
        op = self.operation(layer)
        coeff = floats(self.params_of(layer).get("coeff"))
        if coeff and len(coeff) != count:
            raise self.error(layer, f"eltwise_param has {len(coeff)} coeff values for {count} bottoms "
                                    "(Caffe takes one per bottom, or none)")
        if coeff and op == "PROD":
            raise self.error(layer, "eltwise_param.coeff is only for SUM; Caffe refuses it with PROD")
        return coeff or [1.0] * count

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        self.coefficients(layer, len(layer.bottoms))
        return [same_shapes(layer, bottoms, "Eltwise")]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        coeffs = self.coefficients(layer, len(bottoms))
        same_shapes(layer, [b.shape for b in bottoms], "Eltwise")
        op = self.operation(layer)
        with np.errstate(all="ignore"):
            if op == "PROD":
                top = bottoms[0] * bottoms[1]
                for bottom in bottoms[2:]:
                    top = top * bottom
            elif op == "SUM":
                top = np.zeros(bottoms[0].shape, dtype=np.float32)
                for coeff, bottom in zip(coeffs, bottoms, strict=True):
                    top = top + np.float32(coeff) * bottom
            else:
                top = np.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
                for bottom in bottoms[2:]:
                    top = np.where(bottom > top, bottom, top)
        return [np.asarray(top, dtype=np.float32)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        op = p.get("operation", "SUM")
        op = enum_name(op, OPERATIONS, "SUM")
        coeff = floats(p.get("coeff"))
        if coeff and op != "MAX":
            return f"{op} coeff=[{', '.join(f'{c:g}' for c in coeff)}]"
        return str(op)
