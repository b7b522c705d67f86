"""Embed: each index of the input (a float holding an integer in [0, input_dim)) becomes a ``num_output`` row.

Shapes (``EmbedLayer::Reshape``): the input's shape with ``num_output`` appended.
Blobs (``EmbedLayer::LayerSetUp``): weight ``(input_dim, num_output)``, and
with ``bias_term`` (default true) a bias ``(num_output,)``.
"""

from __future__ import annotations

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import positive
from caffeport.layers.registry import BlobShape, LayerType, Tops, register


@register("Embed")
class Embed(LayerType):
    param = "embed_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [(*bottoms[0], positive(layer, self.params_of(layer), "num_output", "embed_param"))]

    def weighted(self, layer: Layer) -> bool:
        return True

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        p = self.params_of(layer)
        num_output = positive(layer, p, "num_output", "embed_param")
        input_dim = positive(layer, p, "input_dim", "embed_param")
        weight = (input_dim, num_output)
        return [weight, (num_output,)] if p.get("bias_term", True) else [weight]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"in={p.get('input_dim', '?')} out={p.get('num_output', '?')}"
