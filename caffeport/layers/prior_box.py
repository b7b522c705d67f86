"""PriorBox (SSD fork): default boxes and their variances for every cell of a feature map.

Shapes: (1, 2, H * W * num_priors * 4). Per min_size there is one box per
distinct aspect ratio (1 always included, each new ratio followed by its
reciprocal when ``flip``), plus one per max_size. A ratio within 1e-6 of one
already in the list (reciprocals included) is skipped.

Forward (the fork's ``prior_box_layer.cpp`` at the ssd branch's HEAD):

- Image size: ``img_h``/``img_w`` (both needed, not with ``img_size``), or
  ``img_size`` for both, else the second bottom's height and width. Step:
  ``step_h``/``step_w`` (not with ``step``), or ``step`` for both, else
  image size / feature-map size (a float division). ``offset`` defaults to 0.5.
- Cell (h, w) has its centre at ``((w + offset) * step_w, (h + offset) * step_h)``.
- Boxes per cell, for each min_size in order: the square of side min_size;
  then, when max_sizes are given, the square of side ``sqrt(min * max)``; then
  one box per aspect ratio other than 1 (in the deduplicated list's order) of
  width ``min * sqrt(ar)`` and height ``min / sqrt(ar)``. Caffe reads each
  min_size and max_size into an ``int`` there, so fractional sizes are
  truncated (30.5 acts as 30).
- Each box is written as (xmin, ymin, xmax, ymax) = (centre -/+ size / 2)
  divided by the image width/height: normalized, not clipped unless ``clip``
  (then each coordinate is clamped to [0, 1]).
- Channel 1 holds the variances: the one ``variance`` value (default 0.1)
  everywhere, or the four values repeated per box.

The top's layout is (1, 2, H, W, num_priors, 4) flattened; the batch of the
bottoms is irrelevant (one set of priors serves every image).
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, floats, legacy_hw
from caffeport.layers.registry import LayerType, Tops, register


def aspect_ratios(layer: Layer) -> list[float]:
    """The distinct aspect ratios in Caffe's order: 1, then each new one (and its reciprocal with ``flip``).

    Values are float32 as Caffe stores them (the reciprocal is computed in
    double, then stored as float).
    """
    p = layer.param("prior_box_param")
    ratios = [1.0]
    for value in floats(p.get("aspect_ratio")):
        ratio = float(np.float32(value))
        if all(abs(ratio - r) >= 1e-6 for r in ratios):
            with np.errstate(divide="ignore"):  # Caffe's 1./0 is inf (then inf-tall boxes), not an abort
                flipped = float(np.float32(np.float64(1.0) / np.float64(ratio)))
            ratios += [ratio, flipped] if p.get("flip", True) else [ratio]
    return ratios


def _box_sizes(layer: Layer) -> tuple[np.ndarray, np.ndarray]:
    """(widths, heights) of the priors of one cell, float32, in Caffe's order."""
    p = layer.param("prior_box_param")
    min_sizes = [int(v) for v in floats(p.get("min_size"))]  # Caffe: int min_size_ = min_sizes_[s]
    max_sizes = [int(v) for v in floats(p.get("max_size"))]
    ratios = [np.float32(r) for r in aspect_ratios(layer) if abs(r - 1.0) >= 1e-6]
    widths: list[np.float32] = []
    heights: list[np.float32] = []
    for s, lo in enumerate(min_sizes):
        widths.append(np.float32(lo))
        heights.append(np.float32(lo))
        if max_sizes:
            side = np.float32(np.sqrt(float(lo * max_sizes[s])))  # sqrt of an int product, in double
            widths.append(side)
            heights.append(side)
        for ratio in ratios:
            root = np.sqrt(ratio)  # float32 sqrt of a float
            widths.append(np.float32(lo) * root)
            heights.append(np.float32(lo) / root)
    return np.array(widths, dtype=np.float32), np.array(heights, dtype=np.float32)


@register("PriorBox")
class PriorBox(LayerType):
    param = "prior_box_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        p = self.params_of(layer)
        min_sizes, max_sizes = floats(p.get("min_size")), floats(p.get("max_size"))
        if not min_sizes:
            raise error(layer, "prior_box_param has no min_size")
        if not all(0 < v < math.inf for v in (*min_sizes, *max_sizes)):
            # Caffe CHECKs min_size > 0 (NaN fails it), then casts each size to int: infinity has no int
            raise error(layer, f"min_size {min_sizes} and max_size {max_sizes} must be positive and finite")
        if max_sizes and (
            len(max_sizes) != len(min_sizes) or any(hi <= lo for hi, lo in zip(max_sizes, min_sizes, strict=True))
        ):
            raise error(layer, f"max_size {max_sizes} must pair with and exceed min_size {min_sizes}")
        num_priors = len(aspect_ratios(layer)) * len(min_sizes) + len(max_sizes)
        h, w = legacy_hw(bottoms[0])
        return [(1, 2, h * w * num_priors * 4)]

    def _image_size(self, layer: Layer, bottoms: list[np.ndarray]) -> tuple[int, int]:
        p = self.params_of(layer)
        if p.get("img_h") is not None or p.get("img_w") is not None:
            if p.get("img_size") is not None:
                raise error(layer, "either img_size or img_h/img_w may be given, not both")
            img_h, img_w = int(p.get("img_h") or 0), int(p.get("img_w") or 0)
            if img_h <= 0 or img_w <= 0:
                raise error(layer, f"img_h {img_h} and img_w {img_w} must both be positive")
        elif p.get("img_size") is not None:
            img_h = img_w = int(p["img_size"])
            if img_h <= 0:
                raise error(layer, f"img_size {img_h} must be positive")
        else:
            if len(bottoms) < 2:
                raise error(layer, "PriorBox needs the image as its second bottom when no img_size/img_h/img_w")
            img_h, img_w = legacy_hw(bottoms[1].shape)
        return img_h, img_w

    def _steps(self, layer: Layer, img_h: int, img_w: int, h: int, w: int) -> tuple[np.float32, np.float32]:
        p = self.params_of(layer)
        if p.get("step_h") is not None or p.get("step_w") is not None:
            if p.get("step") is not None:
                raise error(layer, "either step or step_h/step_w may be given, not both")
            step_h, step_w = np.float32(p.get("step_h") or 0.0), np.float32(p.get("step_w") or 0.0)
            if step_h <= 0 or step_w <= 0:
                raise error(layer, f"step_h {step_h} and step_w {step_w} must both be positive")
            return step_h, step_w
        if p.get("step") is not None:
            step = np.float32(p["step"])
            if step <= 0:
                raise error(layer, f"step {step} must be positive")
            return step, step
        return np.float32(img_h) / np.float32(h), np.float32(img_w) / np.float32(w)

    def _variances(self, layer: Layer) -> np.ndarray:
        values = floats(self.params_of(layer).get("variance"))
        if len(values) > 1 and len(values) != 4:
            raise error(layer, f"variance must have 1 or 4 values, got {len(values)}")
        if any(v <= 0 for v in values):
            raise error(layer, f"variances must be positive, got {values}")
        return np.array(values or [0.1], dtype=np.float32)

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        p = self.params_of(layer)
        self.infer(layer, [tuple(bottoms[0].shape)])  # Caffe's LayerSetUp checks on min_size/max_size
        if any(v <= 0 for v in floats(p.get("min_size"))):
            raise error(layer, "min_size must be positive")
        h, w = legacy_hw(bottoms[0].shape)
        img_h, img_w = self._image_size(layer, bottoms)
        step_h, step_w = self._steps(layer, img_h, img_w, h, w)
        offset = np.float32(p.get("offset", 0.5))
        widths, heights = _box_sizes(layer)
        num_priors = widths.size

        # centres in float32; the corners in double (``centre - size / 2.``), then stored as float
        cx = ((np.arange(w, dtype=np.float32) + offset) * step_w).astype(np.float64)
        cy = ((np.arange(h, dtype=np.float32) + offset) * step_h).astype(np.float64)
        half_w = widths.astype(np.float64) / 2.0
        half_h = heights.astype(np.float64) / 2.0
        boxes = np.empty((h, w, num_priors, 4), dtype=np.float32)
        boxes[..., 0] = (cx[None, :, None] - half_w[None, None, :]) / img_w
        boxes[..., 1] = (cy[:, None, None] - half_h[None, None, :]) / img_h
        boxes[..., 2] = (cx[None, :, None] + half_w[None, None, :]) / img_w
        boxes[..., 3] = (cy[:, None, None] + half_h[None, None, :]) / img_h
        if p.get("clip", False):
            np.clip(boxes, 0.0, 1.0, out=boxes)
        variances = np.broadcast_to(self._variances(layer), (h, w, num_priors, 4))
        top = np.stack([boxes.reshape(-1), variances.reshape(-1)])[None]
        return [np.ascontiguousarray(top, dtype=np.float32)]
