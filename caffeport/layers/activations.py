"""Element-wise activations: one top of the bottom's shape, each value mapped on its own.

One family because their semantics are one (``NeuronLayer``): ReLU (with
``negative_slope``), ReLU6, Sigmoid, TanH, AbsVal, Power, Exp, Log, BNLL, ELU,
Threshold, Swish, Clip. None has blobs.
"""

from __future__ import annotations

from caffeport.ir import Layer
from caffeport.layers.registry import SameShape, register


@register("ReLU")
class ReLU(SameShape):
    param = "relu_param"

    def key_params(self, layer: Layer) -> str:
        slope = self.params_of(layer).get("negative_slope", 0.0)
        return f"negative_slope={slope:g}" if slope else ""


@register("ReLU6")
class ReLU6(SameShape):
    pass


@register("Sigmoid")
class Sigmoid(SameShape):
    pass


@register("TanH")
class TanH(SameShape):
    pass


@register("AbsVal")
class AbsVal(SameShape):
    pass


@register("Power")
class Power(SameShape):
    param = "power_param"


@register("Exp")
class Exp(SameShape):
    param = "exp_param"


@register("Log")
class Log(SameShape):
    param = "log_param"


@register("BNLL")
class BNLL(SameShape):
    pass


@register("ELU")
class ELU(SameShape):
    param = "elu_param"


@register("Threshold")
class Threshold(SameShape):
    param = "threshold_param"


@register("Swish")
class Swish(SameShape):
    param = "swish_param"


@register("Clip")
class Clip(SameShape):
    param = "clip_param"
