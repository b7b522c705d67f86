"""Embed: each index of the input (a float holding an integer in [0, input_dim)) becomes a ``num_output`` row.

Shapes (``EmbedLayer::Reshape``): the input's shape with ``num_output`` appended.
Blobs (``EmbedLayer::LayerSetUp``): weight ``(input_dim, num_output)`` (the
transpose of InnerProduct's layout, one row per index), and with ``bias_term``
(default true) a bias ``(num_output,)``.

Forward (``EmbedLayer::Forward_cpu``): every input value, truncated to an int,
selects row ``index`` of the weight; the bias is then added to every row.
Caffe only ``DCHECK``s that each value is integral and in ``[0, input_dim)``,
so a release build reads outside the weight (or silently truncates) on a bad
index; the reference refuses such an input instead with an `InputError`
naming the layer, the position and the value.
"""

from __future__ import annotations

import numpy as np

from caffeport.errors import InputError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers.fields import positive
from caffeport.layers.layout import SPLIT, Options, expect_blobs, note, vector
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

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        p = self.params_of(layer)
        num_output = positive(layer, p, "num_output", "embed_param")
        input_dim = positive(layer, p, "input_dim", "embed_param")
        x = bottoms[0]
        flat = x.reshape(-1).astype(np.float64)
        bad = ~(np.isfinite(flat) & (flat == np.trunc(flat)) & (flat >= 0) & (flat < input_dim))
        if bad.any():
            first = int(np.argmax(bad))
            where = tuple(int(i) for i in np.unravel_index(first, x.shape))
            raise InputError(
                f"Embed index {flat[first]:g} at position {list(where)} of {layer.bottoms[0]!r} is not an integer "
                f"in [0, input_dim = {input_dim}) ({int(bad.sum())} such value(s))",
                layer=layer.name,
            )
        weight = self.blob(layer, 0).reshape(input_dim, num_output)
        y = weight[flat.astype(np.intp)]
        if p.get("bias_term", True):
            y = y + self.blob(layer, 1).reshape(1, num_output)
        return [y.reshape(*x.shape, num_output)]

    def key_params(self, layer: Layer) -> str:
        p = self.params_of(layer)
        return f"in={p.get('input_dim', '?')} out={p.get('num_output', '?')}"

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Embedding keeps W (input_dim, num_output); Caffe's bias becomes a layer ``<name>_bias`` of its own."""
        expect_blobs(layer, 1, 2)
        weights = np.asarray(layer.blobs[0])
        extra = []
        if len(layer.blobs) == 2:
            extra.append(Layer(name=f"{layer.name}_bias", type="EmbedBias", blobs=[vector(layer.blobs[1])],
                               weight_names=["bias"], framework_class="Bias", bottoms=list(layer.tops),
                               tops=list(layer.tops)))
            note(net, layer, SPLIT, f"the Embed bias has no place in Keras' Embedding: written as {extra[0].name!r}")
        layer.blobs = [weights]
        layer.weight_names = ["embeddings"]
        layer.framework_class = "Embedding"
        note(net, layer, "converted", f"Embedding embeddings {weights.shape}")
        return extra

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        expect_blobs(layer, 1, 2)
        layer.blobs = [np.asarray(layer.blobs[0]), *(vector(b) for b in layer.blobs[1:])]
        layer.weight_names = ["weight", "bias"][: len(layer.blobs)]
        layer.framework_class = "Embedding"
        return None
