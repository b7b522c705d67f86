"""The layer-type registry: one `LayerType` subclass per Caffe layer type, registered by decorator.

In the style of onnx2torch's node converters and onnx's reference ops, each
module of `caffeport.layers` holds everything caffeport knows of one Caffe
layer type (or of a family whose semantics really are one): the ``*_param``
it reads, the blobs Caffe's ``LayerSetUp`` gives it, its ``Reshape`` shape
rule, its numpy forward in Caffe's semantics and its ``inspect`` summary.
Shape inference (`caffeport.layers.shapes`), the prototxt/caffemodel merge, the blob
checks (`caffeport.layers.blobs`), ``inspect`` and `caffeport.run` all
dispatch over `LAYER_TYPES`; none of them lists layer types itself.

Adding a type is one module with one decorated class, plus its import line in
``caffeport/layers/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np

from caffeport.errors import ShapeInferenceError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers.layout import Options

__all__ = ["LAYER_TYPES", "BlobShape", "LayerType", "SameShape", "Tops", "Unsupported", "layer_type", "register"]

#: what a shape rule returns: one entry per top, ``None`` where it cannot know
Tops = list[Shape | None]
#: an expected blob shape; a ``None`` dim is one the known shapes do not decide
BlobShape = tuple[int | None, ...]


class Unsupported(Exception):
    """Raised by a forward for parameter values the reference does not implement (listed by `run`'s pre-flight)."""


class LayerType:
    """What caffeport knows of one Caffe layer type. Subclasses override what applies to them.

    The defaults describe a layer caffeport knows nothing about: no shape rule,
    no blob expectations (its blobs are passed through unchecked), no forward.
    """

    #: the V2 type strings this class handles (set by `register`; the first is the canonical one)
    types: ClassVar[tuple[str, ...]] = ()
    #: the ``*_param`` message the layer reads (``None`` when it reads none)
    param: ClassVar[str | None] = None
    #: leading bottoms the shape rule reads; ``None`` means all of them (at least one)
    bottoms: ClassVar[int | None] = 1
    #: the top shapes depend on the values, not only on the shapes (SSD's DetectionOutput: one row per detection),
    #: so no shape rule can give them before a forward
    shape_from_values: ClassVar[bool] = False

    # ------------------------------------------------------------------ shapes

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        """The top shapes from the (known) shapes of the first `bottoms` bottoms.

        ``None`` means caffeport has no shape rule for this type; a list shorter
        than the tops leaves the rest unknown. Raise `ShapeInferenceError` (via
        `error`) where Caffe's ``Reshape`` would fail a ``CHECK``.
        """
        return None

    # ------------------------------------------------------------------ blobs

    def weighted(self, layer: Layer) -> bool:
        """Whether Caffe gives this layer learned blobs of its own (the merge expects weights for it)."""
        return False

    def blob_shapes(self, layer: Layer, bottoms: list[Shape | None]) -> list[BlobShape] | None:
        """The blobs Caffe's ``LayerSetUp`` would create, in order; ``None``: not known (left unchecked).

        ``bottoms`` are the layer's bottom shapes, ``None`` where unknown; dims
        that depend on an unknown shape are ``None``. A weightless type returns
        ``[]``, so blobs found on it are refused.
        """
        return None if self.weighted(layer) else []

    # ------------------------------------------------------------------ forward

    def forward(self, layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
        """The tops computed from the bottoms in Caffe's semantics, float32 like Caffe's CPU path."""
        raise Unsupported(f"caffeport has no reference forward for layer type {layer.type!r}")

    def unsupported(self, layer: Layer) -> str | None:
        """Why the reference cannot run this layer (a type or parameter value it does not implement), or ``None``."""
        if type(self).forward is LayerType.forward:
            return f"layer type {layer.type!r} has no reference forward"
        return None

    # ------------------------------------------------------------------ weight layouts

    def keras_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """Give ``layer`` the weights of the matching Keras layer, in that layer's own order.

        Sets ``blobs`` (Keras layout), ``weight_names`` (the order Keras loaders
        assign by) and ``framework_class`` (the Keras class); returns extra layers for
        blobs Keras keeps in a layer of their own (an Embed bias). Called by the
        ``keras_layout`` pass for layers with blobs, after the BatchNorm and LSTM
        gate passes; ``net.conversion.data_format`` is set. A type that does not
        override it is passed through (or skipped) as unknown.
        """
        raise NotImplementedError

    def torch_layout(self, net: Net, layer: Layer, options: Options) -> list[Layer] | None:
        """The same for PyTorch: its module's parameter and buffer names (Caffe's layouts mostly carry over)."""
        raise NotImplementedError

    def has_layout(self, family: str) -> bool:
        """Whether this type defines ``<family>_layout`` (``"keras"``, ``"torch"``)."""
        method = f"{family}_layout"
        return hasattr(LayerType, method) and getattr(type(self), method) is not getattr(LayerType, method)

    # ------------------------------------------------------------------ describing

    def key_params(self, layer: Layer) -> str:
        """A short summary of the parameters that decide the layer's behaviour (``inspect``'s last column)."""
        return ""

    # ------------------------------------------------------------------ helpers for subclasses

    def params_of(self, layer: Layer) -> dict[str, Any]:
        """The layer's `param` message as a dict (``{}`` when absent)."""
        return layer.param(self.param) if self.param else {}

    @staticmethod
    def blob(layer: Layer, index: int) -> np.ndarray:
        """Blob ``index`` as an aligned, C-contiguous float32 array: what numpy's BLAS needs.

        Blobs read from a caffemodel are views onto its memory map at whatever
        offset the protobuf put them; numpy multiplies an unaligned matrix
        without BLAS, measured 30 to 100 times slower on VGG16's fc6 (0.47 to
        1.4 s against 14 ms). An aligned float32 blob is used as it is.
        """
        return np.require(layer.blobs[index], np.float32, ["A", "C"])

    @staticmethod
    def error(layer: Layer, message: str) -> ShapeInferenceError:
        return ShapeInferenceError(message, layer=layer.name)


#: V2 type string -> the instance that handles it
LAYER_TYPES: dict[str, LayerType] = {}

_UNKNOWN = LayerType()

T = TypeVar("T", bound=type[LayerType])


def register(*types: str) -> Callable[[T], T]:
    """Class decorator: make the class the handler of each V2 type string in ``types``."""

    def decorate(cls: T) -> T:
        cls.types = tuple(types)
        instance = cls()
        for name in types:
            if name in LAYER_TYPES:
                raise ValueError(f"layer type {name!r} registered twice")
            LAYER_TYPES[name] = instance
        return cls

    return decorate


def layer_type(name: str) -> LayerType:
    """The handler of type string ``name``; an unknown type gets the default `LayerType` (knows nothing)."""
    return LAYER_TYPES.get(name, _UNKNOWN)


class SameShape(LayerType):
    """A layer whose one top has its first bottom's shape (activations, normalizations, Dropout...)."""

    def infer(self, layer: Layer, bottoms: list[Shape]) -> Tops | None:
        return [bottoms[0]]
