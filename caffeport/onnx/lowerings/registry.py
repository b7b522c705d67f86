"""The lowering registry: one `Lowering` per Caffe layer type, registered by decorator (as onnx2torch's converters).

A lowering turns one Caffe layer into ONNX nodes through a `Context`: the
layer, the ONNX names of its bottoms, the shapes caffeport inferred for its
bottoms and tops, and the `GraphBuilder`. It returns one tensor name per top;
`caffeport.onnx.export` gives those tensors their Caffe names. Before any
node is built, `Lowering.refuse` names every parameter value that has no
exact lowering, so a net is refused as a whole, never lowered approximately.

A layer whose tops are constants of the net (``shape_only`` types such as
PriorBox, whose tops depend on the bottoms' shapes alone, and every layer
reading only such constants, such as SSD's Concat of the priors) is not
lowered: `caffeport.onnx.export` computes its tops with the reference's own
forward and writes them as initializers. A lowering that needs a bottom's
values (DetectionOutput's priors) names it in ``constant_bottoms`` and reads
it from `Context.constants`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers import layer_type
from caffeport.onnx.graph import GraphBuilder

__all__ = ["LOWERINGS", "Context", "Lowering", "lowering"]


@dataclass
class Context:
    """What a lowering sees of one layer."""

    graph: GraphBuilder
    layer: Layer
    #: ONNX tensor names of the bottoms, in order
    bottoms: list[str]
    #: caffeport's inferred shapes of bottoms and tops (the prototxt's input sizes)
    bottom_shapes: list[Shape]
    top_shapes: list[Shape]
    #: the graph's inputs have a symbolic batch axis: the lowering must not bake axis 0 in
    dynamic_batch: bool
    #: per bottom, its value when it is a constant of the net (folded at export), else None
    constants: list[np.ndarray | None] = field(default_factory=list)

    @property
    def x(self) -> str:
        return self.bottoms[0]

    @property
    def shape(self) -> Shape:
        """The first bottom's shape."""
        return self.bottom_shapes[0]

    def blob(self, index: int) -> np.ndarray:
        """Blob ``index`` as float32, as the reference computes with it (fp16 and fp64 blobs widened or rounded)."""
        return np.array(self.layer.blobs[index], dtype=np.float32)

    def weight(self, index: int, hint: str, shape: tuple[int, ...] | None = None, transpose: bool = False) -> str:
        """An initializer holding blob ``index`` as float32 (reshaped to ``shape``, then transposed), not copied.

        What `blob` gives, but streamed from the model file when the model is
        written (`caffeport.onnx.graph.GraphBuilder.weight`): the lowerings
        pass the big weights through here so an export never holds them all.
        """
        return self.graph.weight(self.layer.blobs[index], hint, shape, transpose)

    def params(self, key: str | None = None) -> dict:
        """The layer's ``*_param`` (its type's own one when ``key`` is None), Caffe's defaults filled."""
        key = key or layer_type(self.layer.type).param
        return self.layer.param(key) if key else {}

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, **attrs: object) -> str:
        return self.graph.op(op_type, inputs, hint, **attrs)

    def const(self, value: object, hint: str) -> str:
        return self.graph.const(value, hint)

    def identity(self, x: str) -> str:
        return self.graph.op("Identity", [x])


class Lowering:
    """How one Caffe layer type becomes ONNX. Subclasses implement `lower`, and `refuse` where params need it."""

    types: ClassVar[tuple[str, ...]] = ()
    #: the tops depend on the bottoms' shapes only (never their values): folded to constants at export
    shape_only: ClassVar[bool] = False
    #: a layer whose bottoms are all constants may be folded too (False: its tops are not fixed-size tensors)
    foldable: ClassVar[bool] = True
    #: bottoms (by position) whose values the lowering needs: they must be constants of the net
    constant_bottoms: ClassVar[tuple[int, ...]] = ()

    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        """Why this layer cannot be lowered exactly (a parameter value, a form), or ``None``."""
        return None

    def top_shapes(self, layer: Layer) -> list[tuple[int | None, ...]] | None:
        """The tops' shapes, ``None`` for a size known only at run time, when Caffe's are not known before a
        forward (DetectionOutput's row count); ``None``: the type has none such."""
        return None

    def lower(self, ctx: Context) -> list[str]:
        raise NotImplementedError


class Refused(Lowering):
    """A type that is known but not lowered (yet): ``refuse`` always says why."""

    reason: ClassVar[str] = ""

    def refuse(self, layer: Layer, dynamic_batch: bool) -> str | None:
        return self.reason


#: Caffe V2 type string -> its lowering
LOWERINGS: dict[str, Lowering] = {}

T = TypeVar("T", bound=type[Lowering])


def lowering(*types: str) -> Callable[[T], T]:
    """Class decorator: the class lowers each Caffe type in ``types``."""

    def decorate(cls: T) -> T:
        cls.types = tuple(types)
        instance = cls()
        for name in types:
            if name in LOWERINGS:
                raise ValueError(f"an ONNX lowering for {name!r} is registered twice")
            LOWERINGS[name] = instance
        return cls

    return decorate


def broadcast_to_rank(array: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """``array`` (the dims from ``axis`` on) with trailing 1s so that it broadcasts against an ``ndim``-D tensor."""
    return array.reshape(*array.shape, *([1] * (ndim - axis - array.ndim)))
