"""Data layers: tops read from databases, files or memory at run time (Data, ImageData, HDF5Data, ...).

Their shapes depend on files caffeport does not have, except MemoryData's,
which its params state. They have no reference forward: `caffeport.run`
takes the values of the net's inputs from the caller instead.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error
from caffeport.layers.registry import LayerType, Tops, register


@register("Data", "ImageData", "HDF5Data", "AnnotatedData", "WindowData", "VideoData")
class FileData(LayerType):
    bottoms = 0

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return []  # known only when the files are read

@register("MemoryData")
class MemoryData(LayerType):
    """Data is (batch_size, channels, height, width), labels are (batch_size,)."""

    param = "memory_data_param"
    bottoms = 0

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        p = self.params_of(layer)
        dims = tuple(int(p.get(key, 0)) for key in ("batch_size", "channels", "height", "width"))
        if any(d <= 0 for d in dims):
            raise error(layer, f"memory_data_param batch_size/channels/height/width not all positive: {dims}")
        return [dims, (dims[0],)]
