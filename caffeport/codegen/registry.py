"""The emitter registry: one function per Caffe layer type writes that layer's PyTorch code.

In the style of `caffeport.onnx.lowerings`, an emitter is registered by
decorator for the V2 type strings it handles and fills a `LayerCode`: the
lines of ``__init__`` that build the layer's module (weighted layers only;
one attribute per Caffe layer, named after it), the lines of ``forward``
that compute its tops from its bottoms, the helpers those lines call
(`caffeport.codegen.helpers`) and the tensors the weights file holds under
the attribute. Layer modules stay framework-free: nothing here is imported by
`caffeport.layers`.

An emitter that meets a form it does not generate raises `NotGenerated`
with the reason; the generator then writes a stub for that layer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffeport.ir import Layer, Shape
from caffeport.layers import layer_type

__all__ = ["EMITTERS", "LayerCode", "NotGenerated", "emits", "literal", "number"]


class NotGenerated(Exception):
    """Raised by an emitter for a form of its layer type it writes no code for (the message says why)."""


@dataclass
class LayerCode:
    """One layer as the generator hands it to an emitter, and the code the emitter writes for it."""

    #: the layer after the torch backend (PyTorch weight layouts; the name sanitised by the backend)
    layer: Layer
    #: the layer's Caffe name, as the prototxt spells it
    caffe_name: str
    #: ``self.<attr>`` when the emitter builds a module (see `module`)
    attr: str
    #: Python variable names of the bottoms and the tops, in order
    bottoms: list[str]
    tops: list[str]
    init: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    #: (name under the attribute, array) for the weights file
    tensors: list[tuple[str, Any]] = field(default_factory=list)
    #: the weights file gets ``<attr>.num_batches_tracked`` (nn.BatchNorm*d has that buffer)
    batchnorm: bool = False
    #: ``return_all`` records this layer's tops (False where its own output is never computed alone)
    recorded: bool = True

    @property
    def x(self) -> str:
        return self.bottoms[0]

    @property
    def shape(self) -> Shape:
        """The first bottom's shape (known: the generator stubs layers whose shapes are not)."""
        shape = self.layer.bottom_shapes[0]
        assert shape is not None
        return shape

    def params(self, key: str | None = None) -> dict[str, Any]:
        """The layer's ``*_param`` (its type's own one when ``key`` is None), Caffe's defaults filled."""
        key = key or layer_type(self.layer.type).param
        return self.layer.param(key) if key else {}

    def assign(self, expression: str) -> None:
        """``forward`` line: the one top is ``expression`` (nothing when that is already the top's variable)."""
        if expression != self.tops[0]:
            self.body.append(f"{self.tops[0]} = {expression}")

    def module(self, constructor: str, tensors: list[tuple[str, Any]], *helpers: str) -> str:
        """Build ``self.<attr> = constructor`` with these weights; returns ``self.<attr>`` for the forward."""
        self.init.append(f"self.{self.attr} = {constructor}")
        self.tensors.extend(tensors)
        self.helpers.update(helpers)
        return f"self.{self.attr}"


Emitter = Callable[[LayerCode], None]
#: Caffe V2 type string -> its emitter
EMITTERS: dict[str, Emitter] = {}


def emits(*types: str) -> Callable[[Emitter], Emitter]:
    """Decorator: the function writes the code of each Caffe type in ``types``."""

    def register(function: Emitter) -> Emitter:
        for name in types:
            if name in EMITTERS:
                raise ValueError(f"a torch-code emitter for {name!r} is registered twice")
            EMITTERS[name] = function
        return function

    return register


def number(value: Any) -> str:
    """A Caffe float parameter as Python source: the float32 Caffe holds, in its shortest decimal (``0.1``)."""
    text = repr(float(str(np.float32(value))))
    return text if text not in ("inf", "-inf", "nan") else f'float("{text}")'


def axes(values: tuple[int, ...]) -> str:
    """A per-axis window field: one int when every axis agrees (``3``), else a tuple (``(3, 5)``)."""
    return str(values[0]) if len(set(values)) == 1 else str(tuple(values))


def literal(value: Any) -> Any:
    """``value`` (a layer's params) as plain Python data whose ``repr`` is valid source: numpy and bytes made plain."""
    if isinstance(value, dict):
        return {str(k): literal(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [literal(v) for v in value]
    if isinstance(value, np.ndarray):
        return literal(value.tolist())
    if isinstance(value, np.generic):
        return literal(value.item())
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
