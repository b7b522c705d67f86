"""Layers that only a training net holds: losses, Accuracy, Silence. Shapes only; the reference runs only Silence.

A deploy net has none of these; a caffemodel usually holds the training net,
so their shapes are still inferred for ``inspect``.
"""

from __future__ import annotations

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers.fields import axis_index
from caffeport.layers.registry import LayerType, Tops, register


@register(
    "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
    "ContrastiveLoss",
)
class Loss(LayerType):
    """Losses are 0-D blobs in Caffe."""

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [()]


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(LayerType):
    """A 0-D loss, and the softmax probabilities as an optional second top."""

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [(), bottoms[0]]


@register("Accuracy")
class Accuracy(LayerType):
    """A 0-D accuracy, and per-class accuracies (one per label along ``axis``) as an optional second top."""

    param = "accuracy_param"

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        axis = axis_index(layer, self.params_of(layer).get("axis", 1), len(bottoms[0]))
        return [(), (bottoms[0][axis],)]


@register("Silence")
class Silence(LayerType):
    """No tops: it only consumes blobs nobody else reads."""

    bottoms = 0

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return []

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        return []
