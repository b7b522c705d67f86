"""The element-wise activations (`caffeport.layers.activations`), each as the ONNX ops that compute Caffe's formula.

- ReLU: ``Relu``; with ``negative_slope`` ``LeakyRelu(alpha=slope)`` (Caffe's
  ``max(x, 0) + slope * min(x, 0)`` is ``slope * x`` below 0). ReLU6: ``Clip(0, 6)``.
- Sigmoid, TanH, AbsVal, ELU (``Elu(alpha)``): their ONNX namesakes.
- Power: ``Mul(scale)``, ``Add(shift)``, ``Pow(power)``, each only where
  Caffe applies it; when ``power * scale == 0`` the top is Caffe's constant
  (``ConstantOfShape``), whatever the input.
- Exp: ``exp(log(base) * scale * x) * base ** shift``, Log:
  ``log(shift + scale * x) / log(base)``, with Caffe's float32 constants.
- BNLL: ``relu(x) + log(1 + exp(-|x|))``, Caffe's overflow-free form.
- Threshold: ``Cast(Greater(x, t))``; Swish: ``x * Sigmoid(beta * x)``.
- Clip: ``std::max(min, std::min(x, max))`` as two ``Where``s, so NaN
  becomes ``min`` as in Caffe.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from caffeport.ir import Layer
from caffeport.layers import layer_type
from caffeport.onnx.lowerings.registry import Context, Lowering, lowering
from caffeport.onnx.proto import FLOAT, Tensor


def _f(p: dict, key: str, default: float) -> float:
    value = p.get(key)
    return float(np.float32(default if value is None else value))


@lowering("ReLU")
class ReLU(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        slope = _f(ctx.params(), "negative_slope", 0.0)
        if slope == 0:
            return [ctx.op("Relu", [ctx.x])]
        return [ctx.op("LeakyRelu", [ctx.x], alpha=slope)]


@lowering("ReLU6")
class ReLU6(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        return layer_type("ReLU6").unsupported(layer)

    def lower(self, ctx: Context) -> list[str]:
        return [ctx.op("Clip", [ctx.x, ctx.graph.scalar(0.0, "min"), ctx.graph.scalar(6.0, "max")])]


@lowering("Sigmoid", "TanH", "AbsVal")
class Named(Lowering):
    NAMES: ClassVar[dict[str, str]] = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs"}

    def lower(self, ctx: Context) -> list[str]:
        return [ctx.op(self.NAMES[ctx.layer.type], [ctx.x])]


@lowering("ELU")
class ELU(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        return [ctx.op("Elu", [ctx.x], alpha=_f(ctx.params(), "alpha", 1.0))]


def _affine(ctx: Context, x: str, scale: float, shift: float) -> str:
    """``shift + scale * x``, each step only where Caffe takes it."""
    if scale != 1:
        x = ctx.op("Mul", [x, ctx.graph.scalar(scale, "scale")], "scaled")
    if shift != 0:
        x = ctx.op("Add", [x, ctx.graph.scalar(shift, "shift")], "shifted")
    return x


@lowering("Power")
class Power(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        power, scale, shift = _f(p, "power", 1.0), _f(p, "scale", 1.0), _f(p, "shift", 0.0)
        g = ctx.graph
        if np.float32(power) * np.float32(scale) == 0:
            with np.errstate(all="ignore"):
                value = np.float32(1) if power == 0 else np.float32(np.power(np.float64(shift), power))
            shape = ctx.op("Shape", [ctx.x], "shape")
            tensor = Tensor.from_array(np.array([value], np.float32), "value")
            return [ctx.op("ConstantOfShape", [shape], "constant", value=tensor)]
        y = _affine(ctx, ctx.x, scale, shift)
        if power != 1:
            y = ctx.op("Pow", [y, g.scalar(power, "power")], "pow")
        if y == ctx.x:
            y = ctx.identity(y)
        return [y]


@lowering("Exp", "Log")
class ExpLog(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        try:
            layer_type(layer.type).log_base(layer)  # type: ignore[attr-defined]
        except Exception as exc:  # Caffe's CHECKs on the base: the shape rule reports it too
            return str(exc)
        return None

    def lower(self, ctx: Context) -> list[str]:
        p = ctx.params()
        g = ctx.graph
        base, scale, shift = _f(p, "base", -1.0), _f(p, "scale", 1.0), _f(p, "shift", 0.0)
        log_base = layer_type(ctx.layer.type).log_base(ctx.layer)  # type: ignore[attr-defined]
        if ctx.layer.type == "Exp":
            inner = float(np.float32(log_base * np.float32(scale)))
            outer = 1.0
            if shift:
                outer = float(np.float32(np.exp(shift) if base == -1 else np.power(np.float64(base), shift)))
            y = ctx.x if inner == 1 else ctx.op("Mul", [ctx.x, g.scalar(inner, "inner")], "scaled")
            y = ctx.op("Exp", [y], "exp")
            if outer != 1:
                y = ctx.op("Mul", [y, g.scalar(outer, "outer")], "outer")
            return [y]
        y = ctx.op("Log", [_affine(ctx, ctx.x, scale, shift)], "log")
        base_scale = float(np.float32(np.float32(1) / log_base))
        if base_scale != 1:
            y = ctx.op("Mul", [y, g.scalar(base_scale, "base_scale")], "rescaled")
        return [y]


@lowering("BNLL")
class BNLL(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        g = ctx.graph
        negabs = ctx.op("Neg", [ctx.op("Abs", [ctx.x], "abs")], "neg_abs")
        tail = ctx.op("Log", [ctx.op("Add", [ctx.op("Exp", [negabs], "exp"), g.scalar(1.0, "one")], "one_plus")],
                      "tail")
        return [ctx.op("Add", [ctx.op("Relu", [ctx.x], "relu"), tail], "bnll")]


@lowering("Threshold")
class Threshold(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        above = ctx.op("Greater", [ctx.x, ctx.graph.scalar(_f(ctx.params(), "threshold", 0.0), "threshold")],
                       "above")
        return [ctx.op("Cast", [above], "threshold", to=FLOAT)]


@lowering("Swish")
class Swish(Lowering):
    def lower(self, ctx: Context) -> list[str]:
        beta = _f(ctx.params(), "beta", 1.0)
        inner = ctx.x if beta == 1 else ctx.op("Mul", [ctx.x, ctx.graph.scalar(beta, "beta")], "scaled")
        return [ctx.op("Mul", [ctx.x, ctx.op("Sigmoid", [inner], "sigmoid")], "swish")]


@lowering("Clip")
class Clip(Lowering):
    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        return layer_type("Clip").unsupported(layer)

    def lower(self, ctx: Context) -> list[str]:
        low, high = layer_type("Clip").bounds(ctx.layer)  # type: ignore[attr-defined]
        g = ctx.graph
        lo, hi = g.scalar(float(low), "min"), g.scalar(float(high), "max")
        upper = ctx.op("Where", [ctx.op("Less", [hi, ctx.x], "above"), hi, ctx.x], "upper")
        return [ctx.op("Where", [ctx.op("Less", [lo, upper], "inside"), upper, lo], "clip")]
