"""PriorBox (SSD fork): default boxes and their variances for every cell of a feature map.

Shapes: (1, 2, H * W * num_priors * 4). Per min_size there is one box per
distinct aspect ratio (1 always included, each new ratio followed by its
reciprocal when ``flip``), plus one per max_size. A ratio within 1e-6 of one
already in the list (reciprocals included) is skipped.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import error, floats, legacy_hw
from caffeport.layers.registry import LayerType, Tops, register


def aspect_ratios(layer: Layer) -> list[float]:
    """The distinct aspect ratios in Caffe's order: 1, then each new one (and its reciprocal with ``flip``)."""
    p = layer.param("prior_box_param")
    ratios = [1.0]
    for ratio in floats(p.get("aspect_ratio")):
        if all(abs(ratio - r) >= 1e-6 for r in ratios):
            ratios += [ratio, 1.0 / ratio] if p.get("flip", True) else [ratio]
    return ratios


@register("PriorBox")
class PriorBox(LayerType):
    param = "prior_box_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        p = self.params_of(layer)
        min_sizes, max_sizes = floats(p.get("min_size")), floats(p.get("max_size"))
        if not min_sizes:
            raise error(layer, "prior_box_param has no min_size")
        if max_sizes and (
            len(max_sizes) != len(min_sizes) or any(hi <= lo for hi, lo in zip(max_sizes, min_sizes, strict=True))
        ):
            raise error(layer, f"max_size {max_sizes} must pair with and exceed min_size {min_sizes}")
        num_priors = len(aspect_ratios(layer)) * len(min_sizes) + len(max_sizes)
        h, w = legacy_hw(bottoms[0])
        return [(1, 2, h * w * num_priors * 4)]
