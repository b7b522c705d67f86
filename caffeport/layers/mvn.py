"""MVN: mean-variance normalization per sample (and per channel unless ``across_channels``); no blobs.

Shapes (``MVNLayer::Reshape``): Caffe reshapes the top through the legacy
accessors, to ``(num, channels, height, width)``, so a 2- or 3-D input gives
a 4-D top padded with trailing 1s, and a 5-D or larger one fails its ``CHECK``.

Forward (``MVNLayer::Forward_cpu``): the input is seen as rows of ``dim``
values, one row per sample with ``across_channels`` (default false) and one
per (sample, channel) without. Each row has its mean subtracted; with
``normalize_variance`` (default true) it is then divided by
``sqrt(mean((x - mean)^2)) + eps``: Caffe adds ``eps`` (default 1e-9) to the
standard deviation, not to the variance.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error
from caffeport.layers.registry import SameShape, Tops, register


def _legacy4(layer: Layer, shape: Shape) -> Shape:
    """``(num(), channels(), height(), width())``: the shape padded to 4 axes; more than 4 is Caffe's CHECK."""
    if len(shape) > 4:
        raise error(layer, f"MVN reads its input through legacy 4-D accessors; got {len(shape)} axes")
    return (*shape, *(1,) * (4 - len(shape)))


@register("MVN")
class MVN(SameShape):
    """See the module docstring."""

    param = "mvn_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [_legacy4(layer, bottoms[0])]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        p = self.params_of(layer)
        shape = _legacy4(layer, bottoms[0].shape)
        x = bottoms[0].reshape(shape)
        rows = shape[0] if p.get("across_channels", False) else shape[0] * shape[1]
        x2 = x.reshape(rows, -1)
        inv_dim = np.float32(1.0 / x2.shape[1])
        centred = x2 - x2.sum(axis=1, keepdims=True, dtype=np.float32) * inv_dim
        if p.get("normalize_variance", True):
            var = (centred * centred).sum(axis=1, keepdims=True, dtype=np.float32) * inv_dim
            centred = centred / (np.power(var, np.float32(0.5)) + np.float32(p.get("eps", 1e-9)))
        return [centred.reshape(shape)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        parts = [] if p.get("normalize_variance", True) else ["mean-only"]
        if p.get("across_channels", False):
            parts.append("across_channels")
        return " ".join(parts)
