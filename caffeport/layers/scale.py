"""Scale and Bias: multiply by (add) a blob broadcast over the input from ``axis`` (default 1) for ``num_axes`` axes.

With one bottom the factor (addend) is a learned blob of shape
``bottom.shape[axis : axis + num_axes]`` (``num_axes`` default 1, -1: to the
end); with two bottoms it is the second bottom, whose shape must equal that
slice of the first (``ScaleLayer``/``BiasLayer::LayerSetUp``). Scale's
``bias_term`` adds a learned bias blob of the same shape after the product.

Forward (``ScaleLayer``/``BiasLayer::Reshape`` and ``Forward_cpu``): with F
the factor and ``k`` its number of axes, the start axis is ``axis`` (made
canonical against the input), or 0 when F is 0-D (a scalar applies the same
anywhere). The input must have ``shape[a : a + k] == F.shape`` and is seen as
``(outer, dim, inner)``: outer the product of the axes before ``a``, dim the
size of F, inner the product of the axes after ``a + k``; value ``(o, d, i)``
is multiplied by (has added) ``F[d]``. Scale's bias is a Bias layer Caffe
builds over the product with the same ``axis`` and with ``num_axes`` the
factor's axis count, so it broadcasts exactly like the factor; its blob is
``blobs[1]`` in the one-bottom form and ``blobs[0]`` in the two-bottom form.
A learned blob is read through a reshape to the shape ``LayerSetUp`` gives it
(Caffe copies stored values into that shape, whatever dims the file lists).
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Net, Shape
from caffeport.layers.fields import axis_index, error
from caffeport.layers.layout import Options, as_compute, expect_blobs, note, vector
from caffeport.layers.registry import BlobShape, SameShape, register


def broadcast_shape(layer: Layer, p: dict, shape: Shape | None) -> BlobShape | None:
    """``shape[axis : axis + num_axes]``, Caffe's span of the learned factor; ``None`` when ``shape`` is unknown."""
    if shape is None:
        return None
    axis = int(p.get("axis", 1))
    # Caffe: an empty (0-D) factor applies to a scalar at any axis; the axis is canonical against the input.
    start = axis_index(layer, axis, len(shape)) if shape else 0
    num_axes = int(p.get("num_axes", 1))
    if num_axes < -1:
        raise error(layer, f"num_axes must be >= -1, got {num_axes}")
    end = len(shape) if num_axes == -1 else start + num_axes
    if end > len(shape):
        raise error(layer, f"axis {start} + num_axes {num_axes} exceeds the {len(shape)}-D input")
    return tuple(shape[start:end])


def apply_along(layer: Layer, x: np.ndarray, factor: np.ndarray, axis: int, op: str) -> np.ndarray:
    """``x`` times (``op`` "mul") or plus ("add") ``factor`` broadcast over ``x`` from ``axis`` as Caffe does."""
    k = factor.ndim
    start = 0 if k == 0 else axis_index(layer, axis, x.ndim)
    if x.ndim < start + k or tuple(x.shape[start : start + k]) != tuple(factor.shape):
        raise error(layer, f"{layer.type} operand of shape {list(factor.shape)} does not match the input "
                           f"{list(x.shape)} from axis {start}")
    outer, dim, inner = math.prod(x.shape[:start]), factor.size, math.prod(x.shape[start + k :])
    x3, f3 = x.reshape(outer, dim, inner), factor.reshape(1, dim, 1)
    return (x3 * f3 if op == "mul" else x3 + f3).reshape(x.shape)


def per_channel(blob: np.ndarray) -> np.ndarray:
    """A Scale/Bias blob for Keras: (C,) when it is per channel (also from legacy 4-D); other shapes as stored."""
    b = as_compute(blob)
    return b.reshape(-1) if b.ndim <= 1 or sum(d > 1 for d in b.shape) <= 1 else b


class Broadcast(SameShape):
    """What Scale and Bias share: the factor's shape and the one- or two-bottom form."""

    def weighted(self, layer: Layer) -> bool:
        return len(layer.bottoms) < 2

    def learned_shape(self, layer: Layer, bottoms: list[Shape | None]) -> BlobShape:
        shape = broadcast_shape(layer, self.params_of(layer), bottoms[0] if bottoms else None)
        if shape is None:  # unknown input: the count of axes is still known when num_axes is not -1
            num_axes = int(self.params_of(layer).get("num_axes", 1))
            return (None,) * num_axes if num_axes >= 0 else (None,)
        return shape

    def operand(self, layer: Layer, bottoms: list[np.ndarray]) -> tuple[np.ndarray, int]:
        """The factor (addend): bottom 1, or learned blob 0 in its ``LayerSetUp`` shape; and the next blob index."""
        if len(bottoms) >= 2:
            return bottoms[1], 0
        shape = broadcast_shape(layer, self.params_of(layer), bottoms[0].shape) or ()  # known: never None here
        return self.blob(layer, 0).reshape([d for d in shape if d is not None]), 1


@register("Scale")
class Scale(Broadcast):
    """See the module docstring."""

    param = "scale_param"

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        bias = bool(self.params_of(layer).get("bias_term", False))
        if len(layer.bottoms) >= 2:
            if not bias:
                return []
            factor = bottoms[1] if len(bottoms) > 1 else None
            return None if factor is None else [tuple(factor)]
        shape = self.learned_shape(layer, bottoms)
        if shape and shape[0] is None and int(self.params_of(layer).get("num_axes", 1)) == -1:
            return None  # the number of axes is not known either
        return [shape, shape] if bias else [shape]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        p = self.params_of(layer)
        axis = int(p.get("axis", 1))
        factor, next_blob = self.operand(layer, bottoms)
        y = apply_along(layer, bottoms[0], factor, axis, "mul")
        if p.get("bias_term", False):
            bias = self.blob(layer, next_blob).reshape(factor.shape)
            y = apply_along(layer, y, bias, axis, "add")
        return [y]

    def key_params(self, layer: Layer) -> str:
        return "bias" if self.params_of(layer).get("bias_term") else ""

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """A Scale no BatchNorm absorbed: [scale(, bias)], per channel (Keras has no built-in)."""
        expect_blobs(layer, 1, 2)
        layer.blobs = [per_channel(b) for b in layer.blobs]
        layer.weight_names = ["scale", "bias"][: len(layer.blobs)]
        layer.framework_class = "Scale"
        note(net, layer, "converted", "Scale alone: " + ", ".join(layer.weight_names) + " (no Keras built-in)")
        return None

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        expect_blobs(layer, 1, 2)
        layer.blobs = [vector(b) for b in layer.blobs]
        layer.weight_names = ["weight", "bias"][: len(layer.blobs)]
        layer.framework_class = "Scale"
        return None


@register("Bias")
class Bias(Broadcast):
    """See the module docstring."""

    param = "bias_param"

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        if len(layer.bottoms) >= 2:
            return []
        shape = self.learned_shape(layer, bottoms)
        if shape and shape[0] is None and int(self.params_of(layer).get("num_axes", 1)) == -1:
            return None
        return [shape]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        addend, _ = self.operand(layer, bottoms)
        return [apply_along(layer, bottoms[0], addend, int(self.params_of(layer).get("axis", 1)), "add")]

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        expect_blobs(layer, 1)
        layer.blobs = [per_channel(layer.blobs[0])]
        layer.weight_names = ["bias"]
        layer.framework_class = "Bias"
        note(net, layer, "converted", "Bias alone (no Keras built-in)")
        return None

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        expect_blobs(layer, 1)
        layer.blobs = [vector(layer.blobs[0])]
        layer.weight_names = ["bias"]
        layer.framework_class = "Bias"
        return None
