"""Element-wise activations: one top of the bottom's shape, each value mapped on its own.

One family because their semantics are one (``NeuronLayer``): ReLU (with
``negative_slope``), ReLU6, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, ELU,
Threshold, Swish, Clip. None has blobs.

The forwards restate each BVLC ``src/caffe/layers/<name>_layer.cpp``
``Forward_cpu`` (master, 9b891540). Parameters are rounded to float as Caffe's
``Dtype`` holds them and the arithmetic Caffe does on floats (scale, shift,
products) is float32; the math functions (exp, log, tanh, pow) go through C's
double versions there, so they are evaluated in float64 and rounded to float32
when Caffe stores the result:

- ReLU: ``max(x, 0) + negative_slope * min(x, 0)``; the sum is formed even for
  slope 0, so a ``-inf`` input gives NaN there, as in Caffe.
- ReLU6 (a fork type, not in BVLC master; chuanqi305's MobileNet-SSD fork
  ``relu6_layer.cpp``, the same in the unmerged BVLC pull requests from that
  fork and from jolibrain): ``min(max(x, 0), 6)``, no parameter. NVIDIA Caffe and eric612's
  MobileNet-YOLO add a ``negative_slope * min(x, 0)`` term, each in its own
  way and from a different param message, so a nonzero slope is refused.
- Sigmoid: ``0.5 * tanh(0.5 * x) + 0.5`` (Caffe's CPU form; it never overflows).
- TanH: ``tanh(x)``. AbsVal: ``|x|``.
- Power: ``(shift + scale * x) ** power``; when ``power * scale == 0`` the top
  is the constant ``1`` (power 0) or ``shift ** power``, whatever the input.
- Exp: ``base ** (shift + scale * x)`` computed as
  ``exp(log(base) * scale * x) * base ** shift``; ``base = -1`` means e (then
  ``log(base)`` is exactly 1). Any other base must be positive (a ``CHECK``).
- Log: ``log(shift + scale * x) / log(base)``, base -1 meaning e; the base
  must be positive and not 1 (``CHECK``s on ``log(base)`` and its inverse).
- BNLL: ``x + log(1 + exp(-x))`` for ``x > 0``, else ``log(1 + exp(x))``: the
  exponent is never positive, so large ``|x|`` does not overflow; Caffe adds
  the 1 in double precision.
- ELU: ``max(x, 0) + alpha * (exp(min(x, 0)) - 1)``.
- Threshold: 1 where ``x > threshold``, else 0 (NaN gives 0).
- Swish (``swish_param.beta``, default 1): ``x * sigmoid(beta * x)`` with
  Caffe's own Sigmoid layer inside, i.e. the tanh form above.
- Clip (``clip_param.min``/``max``, both required): ``std::max(min,
  std::min(x, max))``, which maps NaN to ``min``; that is reproduced.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Shape
from caffeport.layers.registry import SameShape, Tops, register


def _f32(value: Any) -> np.ndarray:
    """A float32 array (ufuncs on 0-D inputs give scalars; a top is always an array)."""
    return np.asarray(value, dtype=np.float32)


def _param(p: dict[str, Any], key: str, default: float) -> np.float32:
    """A float field rounded to float32, as Caffe's ``Dtype`` holds it."""
    value = p.get(key)
    return np.float32(default if value is None else value)


def _wide(x: Any) -> np.ndarray:
    """``x`` in double: Caffe's loops call the C math functions, which take and return double, and store
    the result as float; so each function is evaluated in float64 and rounded to float32 once."""
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Caffe's CPU sigmoid, ``0.5 * tanh(0.5 x) + 0.5`` (double literals: computed in double, stored as float)."""
    return _f32(0.5 * np.tanh(0.5 * _wide(x)) + 0.5)


def _fmt(value: Any) -> str:
    return f"{float(value):g}"


@register("ReLU")
class ReLU(SameShape):
    param = "relu_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        slope = _param(self.params_of(layer), "negative_slope", 0.0)
        zero = np.float32(0)
        with np.errstate(invalid="ignore", over="ignore"):
            if slope == 0:  # one pass instead of three (8% of a VGG16 forward); Caffe's 0 * -inf is still NaN
                y = _f32(np.maximum(x, zero))
                if x.size and np.fmin.reduce(x, axis=None) == -np.inf:
                    y[np.isneginf(x)] = np.nan
                return [y]
            return [_f32(np.maximum(x, zero) + slope * np.minimum(x, zero))]

    def key_params(self, layer: Layer) -> str:
        slope = self.params_of(layer).get("negative_slope", 0.0)
        return f"negative_slope={slope:g}" if slope else ""


@register("ReLU6")
class ReLU6(SameShape):
    """``min(max(x, 0), 6)``; see the module docstring for the forks and their slopes."""

    @staticmethod
    def slope(layer: Layer) -> float:
        for key in ("relu6_param", "relu_param"):
            value = layer.param(key).get("negative_slope")
            if value:
                return float(value)
        return 0.0

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return [_f32(np.minimum(np.maximum(bottoms[0], np.float32(0)), np.float32(6)))]

    def unsupported(self, layer: Layer) -> str | None:
        if self.slope(layer):
            return (f"ReLU6 with negative_slope {self.slope(layer):g}: the Caffe forks that have one apply it "
                    "differently; only the plain min(max(x, 0), 6) is reproduced")
        return super().unsupported(layer)

    def key_params(self, layer: Layer) -> str:
        return f"negative_slope={self.slope(layer):g}" if self.slope(layer) else ""


@register("Sigmoid")
class Sigmoid(SameShape):
    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return [_sigmoid(bottoms[0])]


@register("TanH")
class TanH(SameShape):
    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return [_f32(np.tanh(_wide(bottoms[0])))]


@register("AbsVal")
class AbsVal(SameShape):
    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return [_f32(np.abs(bottoms[0]))]


@register("Power")
class Power(SameShape):
    param = "power_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        p = self.params_of(layer)
        power, scale, shift = _param(p, "power", 1.0), _param(p, "scale", 1.0), _param(p, "shift", 0.0)
        with np.errstate(all="ignore"):
            if power * scale == 0:  # Caffe's diff_scale_: the input does not matter
                value = np.float32(1) if power == 0 else np.float32(np.power(_wide(shift), power))
                return [np.full(x.shape, value, dtype=np.float32)]
            y = x
            if scale != 1:
                y = y * scale
            if shift != 0:
                y = y + shift
            if power != 1:
                y = np.power(_wide(y), power)
            return [np.array(y, dtype=np.float32)]  # a copy even when nothing applied (power = scale = 1, shift 0)

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return (f"power={_fmt(p.get('power', 1.0))} scale={_fmt(p.get('scale', 1.0))} "
                f"shift={_fmt(p.get('shift', 0.0))}")


class BaseLog(SameShape):
    """What Exp and Log share: ``base`` (-1 for e), ``scale``, ``shift``, and the checks on the base."""

    #: Log also refuses base 1 (its 1 / log(base) is infinite)
    refuses_one: bool = False

    def log_base(self, layer: Layer) -> np.float32:
        """``log(base)`` in float32: exactly 1 for base -1 (e); a base Caffe ``CHECK``s out raises."""
        base = _param(self.params_of(layer), "base", -1.0)
        if base == -1:
            return np.float32(1)
        if not base > 0:
            raise self.error(layer, f"{self.param}.base must be strictly positive (or -1 for e), got {base:g}")
        log_base = np.float32(np.log(_wide(base)))
        if not np.isfinite(log_base) or (self.refuses_one and log_base == 0):
            raise self.error(layer, f"{self.param}.base {base:g} gives log(base) = {log_base:g}: Caffe refuses it")
        return np.float32(log_base)

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        self.log_base(layer)
        return super().infer(layer, bottoms)

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        base = float(p.get("base", -1.0))
        return (f"base={'e' if base == -1 else _fmt(base)} scale={_fmt(p.get('scale', 1.0))} "
                f"shift={_fmt(p.get('shift', 0.0))}")


@register("Exp")
class Exp(BaseLog):
    param = "exp_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        p = self.params_of(layer)
        base, scale, shift = _param(p, "base", -1.0), _param(p, "scale", 1.0), _param(p, "shift", 0.0)
        inner = np.float32(self.log_base(layer) * scale)
        with np.errstate(all="ignore"):
            # Caffe's outer_scale_: base ** shift, skipped (exactly 1) for shift 0
            wide_shift = _wide(shift)
            outer = np.float32(np.exp(wide_shift) if base == -1 else np.power(_wide(base), wide_shift)) if shift \
                else np.float32(1)
            y = _f32(np.exp(_wide(x if inner == 1 else x * inner)))
            if outer != 1:
                y = y * outer
            return [_f32(y)]


@register("Log")
class Log(BaseLog):
    param = "log_param"
    refuses_one = True

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        p = self.params_of(layer)
        scale, shift = _param(p, "scale", 1.0), _param(p, "shift", 0.0)
        base_scale = np.float32(np.float32(1) / self.log_base(layer))
        with np.errstate(all="ignore"):
            y = x
            if scale != 1:
                y = y * scale
            if shift != 0:
                y = y + shift
            y = _f32(np.log(_wide(y)))
            if base_scale != 1:
                y = y * base_scale
            return [_f32(y)]


@register("BNLL")
class BNLL(SameShape):
    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        with np.errstate(all="ignore"):
            tail = np.log(1.0 + np.exp(-np.abs(_wide(x))))  # log(1 + exp(-|x|)), in double as in Caffe's loop
            return [_f32(np.where(x > 0, x + tail, tail))]


@register("ELU")
class ELU(SameShape):
    param = "elu_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        alpha = _param(self.params_of(layer), "alpha", 1.0)
        zero, one = np.float32(0), np.float32(1)
        with np.errstate(all="ignore"):
            # exp() is double there, so the whole expression is, and only the result is rounded to float
            return [_f32(np.maximum(x, zero) + alpha * (np.exp(_wide(np.minimum(x, zero))) - one))]

    def key_params(self, layer: Layer) -> str:
        alpha = self.params_of(layer).get("alpha", 1.0)
        return f"alpha={_fmt(alpha)}" if alpha != 1.0 else ""


@register("Threshold")
class Threshold(SameShape):
    param = "threshold_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        threshold = _param(self.params_of(layer), "threshold", 0.0)
        with np.errstate(invalid="ignore"):
            return [_f32(bottoms[0] > threshold)]

    def key_params(self, layer: Layer) -> str:
        return f"threshold={_fmt(self.params_of(layer).get('threshold', 0.0))}"


@register("Swish")
class Swish(SameShape):
    param = "swish_param"

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        beta = _param(self.params_of(layer), "beta", 1.0)
        with np.errstate(all="ignore"):
            return [_f32(x * _sigmoid(x * beta))]

    def key_params(self, layer: Layer) -> str:
        beta = self.params_of(layer).get("beta", 1.0)
        return f"beta={_fmt(beta)}" if beta != 1.0 else ""


@register("Clip")
class Clip(SameShape):
    param = "clip_param"

    def bounds(self, layer: Layer) -> tuple[np.float32, np.float32]:
        """``min`` and ``max``: both are required fields, so a file without them is one Caffe cannot parse."""
        p = self.params_of(layer)
        missing = [key for key in ("min", "max") if p.get(key) is None]
        if missing:
            raise self.error(layer, f"clip_param has no {' and no '.join(missing)} (required fields)")
        return np.float32(p["min"]), np.float32(p["max"])

    def unsupported(self, layer: Layer) -> str | None:
        try:
            self.bounds(layer)
        except ShapeInferenceError as exc:  # listed before the run; the shape does not depend on the bounds
            return exc.message
        return super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        low, high = self.bounds(layer)
        x = bottoms[0]
        with np.errstate(invalid="ignore"):
            upper = np.where(high < x, high, x)  # std::min(x, max): NaN stays NaN
            return [_f32(np.where(low < upper, upper, low))]  # std::max(min, .): NaN becomes min

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"min={_fmt(p.get('min', float('nan')))} max={_fmt(p.get('max', float('nan')))}"
