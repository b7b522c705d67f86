"""PReLU: ``max(0, x) + slope * min(0, x)`` with one slope per channel (axis 1), or one for all with ``channel_shared``.

Blobs (``PReLULayer::LayerSetUp``): the slope, ``(C,)``, or 0-D with ``channel_shared``.

Forward (``PReLULayer::Forward_cpu``): element i of the input takes slope
``(i / count(2)) % C`` (its index along axis 1), or slope 0 when shared. Caffe
reads C through the legacy ``channels()`` accessor and ``CHECK``s at least 2
axes, so it accepts 2- to 4-D inputs only; so does the reference.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Net, Shape
from caffeport.layers.fields import channels, error
from caffeport.layers.layout import Options, expect_blobs, note, vector
from caffeport.layers.registry import BlobShape, SameShape, Tops, register


def _check_axes(layer: Layer, ndim: int) -> None:
    if not 2 <= ndim <= 4:
        raise error(layer, f"PReLU needs an input of 2 to 4 axes (Caffe reads it through legacy accessors), "
                           f"got {ndim}")


@register("PReLU")
class PReLU(SameShape):
    param = "prelu_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        _check_axes(layer, len(bottoms[0]))
        return [bottoms[0]]

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        if self.params_of(layer).get("channel_shared", False):
            return [()]
        return [(channels(bottoms[0] if bottoms else None),)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        _check_axes(layer, x.ndim)
        slope = self.blob(layer, 0).reshape(-1)
        if self.params_of(layer).get("channel_shared", False):
            a = slope[:1].reshape((1,) * x.ndim)
        else:
            a = slope.reshape(1, x.shape[1], *(1,) * (x.ndim - 2))
        zero = np.float32(0)
        return [np.maximum(x, zero) + a * np.minimum(x, zero)]

    def key_params(self, layer: Layer) -> str:
        return "channel_shared" if self.params_of(layer).get("channel_shared") else ""

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """The alpha of a Keras PReLU sharing the spatial axes: (1, 1, C) after a 4-D blob, (C,) after 2-D."""
        expect_blobs(layer, 1)
        slope = vector(layer.blobs[0])
        shape = layer.bottom_shapes[0] if layer.bottom_shapes else None
        if shape is None:
            note(net, layer, "warning", "input shape unknown: alpha written as (C,); reshape it for a 4-D input")
            net.warnings.append(f"layer {layer.name!r}: PReLU input shape unknown, alpha written as {slope.shape}")
            alpha = slope
        else:
            spatial = len(shape) - 2  # axes after (N, C)
            if net.conversion.data_format == "channels_first":
                alpha = slope.reshape(slope.size, *([1] * spatial))
            else:
                alpha = slope.reshape(*([1] * spatial), slope.size)
        layer.blobs = [alpha]
        layer.weight_names = ["alpha"]
        layer.framework_class = "PReLU"
        shared = " (channel_shared)" if slope.size == 1 else ""
        note(net, layer, "converted", f"PReLU alpha {alpha.shape}{shared}")
        return None

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        expect_blobs(layer, 1)
        layer.blobs = [vector(layer.blobs[0])]
        layer.weight_names = ["weight"]
        layer.framework_class = "PReLU"
        return None
