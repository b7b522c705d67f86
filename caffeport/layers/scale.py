"""Scale and Bias: multiply by (add) a blob broadcast over the input from ``axis`` (default 1) for ``num_axes`` axes.

With one bottom the factor (addend) is a learned blob of shape
``bottom.shape[axis : axis + num_axes]`` (``num_axes`` default 1, -1: to the
end); with two bottoms it is the second bottom, whose shape must equal that
slice of the first (``ScaleLayer``/``BiasLayer::LayerSetUp``). Scale's
``bias_term`` adds a learned bias blob of the same shape after the product.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error
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


@register("Scale")
class Scale(Broadcast):
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

    def key_params(self, layer: Layer) -> str:
        return "bias" if self.params_of(layer).get("bias_term") else ""


@register("Bias")
class Bias(Broadcast):
    param = "bias_param"

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        if len(layer.bottoms) >= 2:
            return []
        shape = self.learned_shape(layer, bottoms)
        if shape and shape[0] is None and int(self.params_of(layer).get("num_axes", 1)) == -1:
            return None
        return [shape]
