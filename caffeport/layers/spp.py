"""SPP: spatial pyramid pooling, a fixed-length vector from any H x W (``SPPLayer``, spp_layer.cpp).

Level ``l`` of ``pyramid_height`` (``l = 0 .. pyramid_height - 1``) pools
the input into ``bins = 2**l`` cells per axis with an ordinary Pooling
window (``SPPLayer::GetPoolingParam``):
``kernel = ceil(H / bins)``, ``stride = kernel``,
``pad = (kernel * bins - H + 1) // 2`` (likewise W), ``pool`` from
``spp_param`` (MAX or AVE; STOCHASTIC has no CPU forward), CEIL rounding.
Pooling's own rules then apply: its output size (usually ``bins``, with the
last window dropped when it starts in the padding), its ``pad < kernel``
check (small inputs with a tall pyramid fail it, as Caffe does) and its
MAX / AVE border semantics.

The top: with ``pyramid_height: 1`` the single level's Pooling output itself,
``(N, C, 1, 1)``; otherwise each level flattened to ``(N, C * out_h * out_w)``
(channel-major) and the levels concatenated on axis 1, coarsest first:
``(N, C * sum_l 4**l)`` in the usual case.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error
from caffeport.layers.pooling import pool_forward, pool_method, pool_unsupported, pooled_size
from caffeport.layers.registry import LayerType, Tops, register


@dataclass(frozen=True)
class Level:
    """One pyramid level's Pooling window and its output size."""

    kernel: tuple[int, int]
    pad: tuple[int, int]
    out: tuple[int, int]


def levels(layer: Layer, height: int, width: int) -> list[Level]:
    """The pooling window of every pyramid level for an H x W input (raises where Caffe's checks fail)."""
    p = layer.param("spp_param")
    pyramid = int(p.get("pyramid_height", 0) or 0)
    if pyramid <= 0:
        raise error(layer, "spp_param.pyramid_height must be positive")
    if height <= 0 or width <= 0:
        raise error(layer, f"SPP input dimensions must be positive, got {height} x {width}")
    result = []
    for level in range(pyramid):
        bins = 2**level
        kernel = (-(-height // bins), -(-width // bins))
        pad = ((kernel[0] * bins - height + 1) // 2, (kernel[1] * bins - width + 1) // 2)
        padded = bool(pad[0] or pad[1])
        out = (pooled_size(layer, height, kernel[0], pad[0], kernel[0], False, padded),
               pooled_size(layer, width, kernel[1], pad[1], kernel[1], False, padded))
        result.append(Level(kernel, pad, out))
    return result


@register("SPP")
class SPP(LayerType):
    param = "spp_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        shape = bottoms[0]
        if len(shape) != 4:
            raise error(layer, f"SPP needs a 4-D input (N, C, H, W), got {shape}")
        n, c, h, w = shape
        pyramid = levels(layer, h, w)
        if len(pyramid) == 1:
            return [(n, c, *pyramid[0].out)]
        return [(n, c * sum(level.out[0] * level.out[1] for level in pyramid))]

    def unsupported(self, layer: Layer) -> str | None:
        reason = pool_unsupported(pool_method(self.params_of(layer).get("pool")))
        return reason or super().unsupported(layer)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], np.float32)
        n = x.shape[0]
        method = pool_method(self.params_of(layer).get("pool"))
        pooled = [pool_forward(x, method, level.kernel, level.kernel, level.pad, level.out)[0]
                  for level in levels(layer, x.shape[2], x.shape[3])]
        if len(pooled) == 1:
            return pooled
        return [np.concatenate([top.reshape(n, -1) for top in pooled], axis=1)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"{pool_method(p.get('pool'))} pyramid_height={p.get('pyramid_height', '?')}"
