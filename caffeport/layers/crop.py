"""Crop: axes from ``axis`` (default 2) on take the second (reference) bottom's sizes, starting at ``offset``.

``CropLayer`` (BVLC): exactly two bottoms of the same number of axes. Axes
before ``axis`` are kept whole; each axis ``i >= axis`` is cut to
``bottom[1].shape[i]`` values starting at the offset: no offset means 0, one
offset applies to every cropped axis, several must be one per cropped axis
(``axis + len(offset) == num_axes``). A window running past the end is a
``CHECK`` failure. Only bottom[1]'s shape is read, never its values.
"""

from __future__ import annotations

import numpy as np

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

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        if len(bottoms) != 2:
            raise self.error(layer, f"Crop takes exactly 2 bottoms, got {len(bottoms)}")
        x, reference = bottoms
        offsets = crop_offsets(layer, x.shape, reference.shape)
        (top,) = self.infer(layer, [x.shape, reference.shape])
        assert top is not None
        window = tuple(slice(o, o + n) for o, n in zip(offsets, top, strict=True))
        return [np.ascontiguousarray(x[window], dtype=np.float32)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        offsets = ints(p.get("offset"))
        shown = "0" if not offsets else str(offsets[0]) if len(offsets) == 1 else f"[{', '.join(map(str, offsets))}]"
        return f"axis={p.get('axis', 2)} offset={shown}"
