"""Crop: axes from ``axis`` (default 2) on take the second (reference) bottom's sizes, starting at ``offset``.

``offset`` is one value for all cropped axes or one per cropped axis (``CropLayer::Reshape``).
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index, error, ints
from caffeport.layers.registry import LayerType, Tops, register


def crop_offsets(layer: Layer, shape: Shape, reference: Shape) -> list[int]:
    """The start of the window along every axis (0 on the axes before ``axis``); checks that it fits."""
    if len(shape) != len(reference):
        raise error(layer, f"Crop bottoms must have the same number of axes: {shape} vs {reference}")
    p = layer.param("crop_param")
    axis = axis_index(layer, p.get("axis", 2), len(shape))
    given = ints(p.get("offset"))
    if len(given) > 1 and axis + len(given) != len(shape):
        raise error(layer, f"{len(given)} offsets for the {len(shape) - axis} axes from axis {axis}")
    offsets = [0] * len(shape)
    for i in range(axis, len(shape)):
        offset = 0 if not given else given[0] if len(given) == 1 else given[i - axis]
        if offset < 0 or shape[i] - offset < reference[i]:
            raise error(layer, f"crop {reference[i]} at offset {offset} exceeds axis {i} of size {shape[i]}")
        offsets[i] = offset
    return offsets


@register("Crop")
class Crop(LayerType):
    param = "crop_param"
    bottoms = 2

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape, reference = bottoms
        axis = axis_index(layer, self.params_of(layer).get("axis", 2), len(shape))
        crop_offsets(layer, shape, reference)
        return [tuple(reference[i] if i >= axis else shape[i] for i in range(len(shape)))]
