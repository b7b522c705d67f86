"""LRN: local response normalization ACROSS_CHANNELS (default) or WITHIN_CHANNEL; no blobs.

Caffe (``LRNLayer::LayerSetUp``/``Reshape``) requires a 4-D input and an odd
``local_size`` (default 5); ``alpha`` defaults to 1, ``beta`` to 0.75, ``k`` to 1.

ACROSS_CHANNELS (``CrossChannelForward_cpu``): with ``p = (local_size - 1) / 2``,
``scale[n, c] = k + alpha / local_size * sum of x[n, c']^2 for c' in [c - p, c + p]``,
channels outside ``[0, C)`` counting as 0 (Caffe sums over a zero-padded copy),
and ``y = x * scale^-beta``.

WITHIN_CHANNEL (``WithinChannelForward``, a small net of Caffe layers): x^2
goes through an AVE Pooling of kernel ``local_size``, stride 1 and pad ``p``,
then through a Power layer with power ``-beta``, scale ``alpha`` and shift 1
(``k`` is not used in this mode), and x is multiplied by the result:
``y = x * (1 + alpha * avg)^-beta``. AVE pooling sums the in-image taps but
divides by the window clipped to the *padded* extent, ``(min(h - p + size,
H + p) - (h - p))`` times the same for w; with stride 1 and this pad that is
``local_size^2`` everywhere, so the zero padding counts in the average. When
``alpha * beta`` is 0 the Power layer outputs 1 without reading its input.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error
from caffeport.layers.registry import SameShape, Tops, register

#: LRNParameter.NormRegion by number, for params that arrive as enum numbers
_REGIONS = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}


def _region(p: dict) -> str:
    value = p.get("norm_region", "ACROSS_CHANNELS")
    return _REGIONS.get(value, str(value)) if isinstance(value, int) else str(value)


def _padded_extent(size: int, window: int, pad: int) -> np.ndarray:
    """AVE pooling's divisor along one axis (stride 1): the window clipped to the padded input, per output index."""
    start = np.arange(size) - pad
    return np.minimum(start + window, size + pad) - start


@register("LRN")
class LRN(SameShape):
    """See the module docstring."""

    param = "lrn_param"

    def check(self, layer: Layer, shape: Shape) -> int:
        """Caffe's checks: a 4-D input, an odd local_size, a known region; returns local_size."""
        p = self.params_of(layer)
        if len(shape) != 4:
            raise error(layer, f"LRN needs a 4-D input (num, channels, height, width), got {len(shape)} axes")
        size = int(p.get("local_size", 5))
        if size <= 0 or size % 2 != 1:
            raise error(layer, f"LRN only supports odd values for local_size, got {size}")
        return size

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        self.check(layer, bottoms[0])
        return [bottoms[0]]

    def unsupported(self, layer: Layer) -> str | None:
        region = _region(self.params_of(layer))
        if region not in ("ACROSS_CHANNELS", "WITHIN_CHANNEL"):
            return f"unknown norm_region {region!r}"
        return super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = bottoms[0]
        size = self.check(layer, x.shape)
        p = self.params_of(layer)
        alpha = np.float32(p.get("alpha", 1.0))
        beta = np.float32(p.get("beta", 0.75))
        pad = (size - 1) // 2
        square = x * x
        n, c, h, w = x.shape
        if _region(p) == "ACROSS_CHANNELS":
            padded = np.zeros((n, c + size - 1, h, w), dtype=np.float32)
            padded[:, pad : pad + c] = square
            alpha_over_size = alpha / np.float32(size)
            scale = np.full(x.shape, np.float32(p.get("k", 1.0)), dtype=np.float32)
            for tap in range(size):  # one tap of the channel window at a time, as Caffe accumulates
                scale += alpha_over_size * padded[:, tap : tap + c]
            return [x * np.power(scale, -beta)]
        padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=np.float32)
        padded[:, :, pad : pad + h, pad : pad + w] = square
        total = np.zeros(x.shape, dtype=np.float32)
        for dy in range(size):
            for dx in range(size):
                total += padded[:, :, dy : dy + h, dx : dx + w]
        divisor = np.outer(_padded_extent(h, size, pad), _padded_extent(w, size, pad)).astype(np.float32)
        average = total / divisor
        if alpha * -beta == 0:  # PowerLayer's shortcut: pow(shift = 1, power) everywhere
            return [x * np.float32(1)]
        return [x * np.power(alpha * average + np.float32(1), -beta)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"{_region(p)} size={p.get('local_size', 5)}"
