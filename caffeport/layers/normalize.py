"""Normalize (SSD fork): L2 norm over channels (``across_spatial: false``) or the whole sample, then a learned scale.

Blobs (``NormalizeLayer::LayerSetUp``): the scale, 0-D (one value) with
``channel_shared`` (the default) or ``(C,)``. The fork creates the shared
scale as a blob of no axes, so that is what its weights files hold (a legacy
1x1x1x1 blob also fits, as ``Blob::ShapeEquals`` compares legacy dims padded).

Forward (the SSD fork's ``normalize_layer.cpp``, ``Forward_cpu``), per sample
``n``, in float32:

- ``across_spatial`` (default true): ``norm = sqrt(sum(x[n] ** 2) + eps)``
  over all C*H*W values; the top is ``x[n] * (1 / norm)`` (the reciprocal is
  taken once, then multiplied in).
- otherwise, per spatial position: ``norm = sqrt(eps + sum_c x[n, c] ** 2)``
  (the norm buffer starts at eps and the channel sum is accumulated onto it);
  the top is ``x / norm``.
- then the scale: ``top *= scale`` (one value) or ``top[:, c] *= scale[c]``.

``eps`` (default 1e-10) sits inside the square root in both modes. Caffe's
layer reads the blob through num/channels/height/width, so axes beyond the
fourth are not supported.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import channels
from caffeport.layers.registry import BlobShape, SameShape, Unsupported, register


@register("Normalize")
class Normalize(SameShape):
    param = "norm_param"

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        if self.params_of(layer).get("channel_shared", True):
            return [()]
        return [(channels(bottoms[0] if bottoms else None),)]

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bottoms[0], dtype=np.float32)
        if x.ndim < 2:
            raise ValueError(f"Normalize needs a bottom of at least 2 axes, got {list(x.shape)}")
        if x.ndim > 4:
            raise Unsupported(f"Normalize reads its bottom as N x C x H x W; a {x.ndim}-D bottom is not supported")
        p = self.params_of(layer)
        eps = np.float32(p.get("eps", 1e-10))
        n, c = x.shape[0], x.shape[1]
        flat = x.reshape(n, c, -1)  # (N, C, H*W)
        if p.get("across_spatial", True):
            # the sum of squares in float64, rounded once: as close to the exact sum as any BLAS asum gets
            sums = np.square(flat.astype(np.float64)).sum(axis=(1, 2)).astype(np.float32)
            norm = np.sqrt((sums + eps).astype(np.float64)).astype(np.float32)
            inv = (1.0 / norm.astype(np.float64)).astype(np.float32)
            top = flat * inv[:, None, None]
        else:
            sums = np.square(flat.astype(np.float64)).sum(axis=1, keepdims=True).astype(np.float32)
            norm = np.sqrt(eps + sums)
            top = flat / norm
        scale = self.blob(layer, 0).reshape(-1)
        factor = scale[0] if p.get("channel_shared", True) else scale[None, :, None]
        top = top * factor
        return [top.reshape(x.shape).astype(np.float32, copy=False)]
