"""A small ONNX graph builder: unique names, initializers from numpy, the opset's spelling of each op.

The lowerings call `GraphBuilder.op` and the helpers below and never touch
the messages themselves (`caffeport.onnx.proto`: caffeport's own records,
encoded without the onnx package); the opset decides how an op is spelled where
ONNX moved an attribute to an input (``Split``'s sizes and ``ReduceSum``'s
axes at 13, the other reductions' axes at 18), so a lowering is written once
for every supported opset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from caffeport.onnx.proto import FLOAT, Node, Tensor, make_node
from caffeport.streaming.blocks import Blob, Reshaped

#: the oldest opset the lowerings are written for: Softmax per axis, Split sizes and Unsqueeze axes as inputs
MIN_OPSET = 13
#: float32's largest finite value: Caffe's MAX pooling starts every window at -FLT_MAX
FLT_MAX = float(np.finfo(np.float32).max)


#: the metadata_props key of the ``<layer>/<top>`` -> tensor name map
TENSOR_MAP_KEY = "caffeport.tensors"

class GraphBuilder:
    """Nodes, initializers and names of one ONNX graph under construction."""

    def __init__(self, opset: int) -> None:
        self.opset = opset
        self.nodes: list[Node] = []
        self.initializers: list[Tensor] = []
        #: initializer name -> the weight it holds, not copied: its TensorProto in `initializers` has dims and
        #: type but no data, which `caffeport.onnx.export` fills (`to_onnx`) or streams into the file (`write_onnx`)
        self.lazy: dict[str, Blob] = {}
        self._used: set[str] = set()
        self._int_consts: dict[tuple[str, tuple[int, ...]], str] = {}
        #: the node name prefix (the Caffe layer being lowered)
        self.scope = ""

    # ------------------------------------------------------------------ names

    def reserve(self, name: str) -> str:
        """Take ``name`` exactly when it is free, else ``name`` with the first free ``_<n>`` suffix."""
        candidate, n = name, 1
        while candidate in self._used:
            candidate = f"{name}_{n}"
            n += 1
        self._used.add(candidate)
        return candidate

    def fresh(self, hint: str) -> str:
        """A new tensor or node name ``<scope>/<hint>`` (unique)."""
        return self.reserve(f"{self.scope}/{hint}" if self.scope else hint)

    # ------------------------------------------------------------------ constants

    def const(self, value: Any, hint: str, dtype: Any = np.float32) -> str:
        """An initializer holding ``value`` (a numpy array or a number), named ``<scope>/<hint>``."""
        array = np.array(value, dtype=dtype, order="C")  # ascontiguousarray would make a 0-D value 1-D
        name = self.fresh(hint)
        self.initializers.append(Tensor.from_array(array, name))
        return name

    def weight(self, blob: Blob, hint: str, shape: Sequence[int] | None = None, transpose: bool = False) -> str:
        """A float32 initializer holding a weight blob (reshaped to ``shape``, then transposed), left uncopied.

        The weights are most of a model's bytes and are views onto the
        caffemodel's memory map: copying them into the ModelProto would hold the
        whole model in memory (twice, once serialized). The initializer gets
        its dims and type now and its values when the model is written, read
        in blocks from ``blob`` (see `lazy`). A reshape that cannot be a numpy
        view becomes a `caffeport.streaming.blocks.Reshaped` (copied block by block when
        written); a transpose stays a strided view, written through the tiled
        transpose of `caffeport.streaming.blocks.iter_placed`. Only a `Reshaped` blob
        that must be transposed (no lowering of a Caffe-layout net makes one)
        is copied here, one blob at a time.
        """
        source = _reshaped(blob, tuple(int(d) for d in blob.shape) if shape is None else tuple(shape))
        if transpose:
            if not isinstance(source, np.ndarray):
                source = np.asarray(source)  # a Reshaped has no strided transpose: this one blob is copied
            source = source.T
        dims = tuple(int(d) for d in source.shape)
        if math.prod(dims) == 0:
            return self.const(np.asarray(source, dtype=np.float32), hint)
        name = self.fresh(hint)
        self.initializers.append(Tensor(name=name, dims=list(dims), data_type=FLOAT))
        self.lazy[name] = source
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        """A 1-D int64 initializer (shapes, axes, pads), shared between uses of the same values."""
        key = (hint, tuple(int(v) for v in values))
        if key not in self._int_consts:
            saved, self.scope = self.scope, ""
            try:
                self._int_consts[key] = self.const(np.array(key[1], dtype=np.int64), f"const/{hint}", np.int64)
            finally:
                self.scope = saved
        return self._int_consts[key]

    def scalar(self, value: float, hint: str) -> str:
        """A float32 scalar initializer (0-D: broadcasts against anything)."""
        return self.const(np.float32(value), hint)

    # ------------------------------------------------------------------ nodes

    def op(self, op_type: str, inputs: Sequence[str], hint: str | None = None, *, outputs: int = 1,
           **attrs: Any) -> Any:
        """Add one node; its output name (a list of names when ``outputs`` > 1). ``""`` inputs are omitted ones."""
        base = hint or op_type.lower()
        names = [self.fresh(base if outputs == 1 else f"{base}_{i}") for i in range(outputs)]
        node_name = names[0] if outputs == 1 else self.fresh(f"{base}_node")
        attrs = {key: value for key, value in attrs.items() if value is not None}
        self.nodes.append(make_node(op_type, list(inputs), names, name=node_name, **attrs))
        return names[0] if outputs == 1 else names

    # ------------------------------------------------------------------ ops whose spelling depends on the opset

    def reduce(self, op_type: str, x: str, axes: Sequence[int], keepdims: bool, hint: str | None = None) -> str:
        """``Reduce*`` over ``axes``: an attribute before opset 18 (13 for ReduceSum), an input after."""
        axes_input_from = 13 if op_type == "ReduceSum" else 18
        if self.opset >= axes_input_from:
            return self.op(op_type, [x, self.ints(axes, "axes")], hint, keepdims=int(keepdims))
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=int(keepdims))

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
              steps: Sequence[int] | None = None, hint: str = "slice") -> str:
        inputs = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")]
        if steps is not None:
            inputs.append(self.ints(steps, "steps"))
        return self.op("Slice", inputs, hint)

    def split(self, x: str, sizes: Sequence[int], axis: int, hint: str = "split") -> list[str]:
        """``Split`` into parts of ``sizes`` along ``axis`` (the sizes are an input from opset 13)."""
        names = self.op("Split", [x, self.ints(sizes, "split")], hint, outputs=len(sizes), axis=axis)
        return names if len(sizes) > 1 else [names]

    def reshape(self, x: str, shape: Sequence[int], hint: str = "reshape") -> str:
        """ONNX ``Reshape`` (``allowzero=0``: a 0 copies the input's dim there, one -1 is inferred, as in Caffe)."""
        return self.op("Reshape", [x, self.ints(shape)], hint)

    def unsqueeze(self, x: str, axes: Sequence[int], hint: str = "unsqueeze") -> str:
        return self.op("Unsqueeze", [x, self.ints(axes, "axes")], hint)

    def squeeze(self, x: str, axes: Sequence[int], hint: str = "squeeze") -> str:
        return self.op("Squeeze", [x, self.ints(axes, "axes")], hint)

    def pad(self, x: str, begin: Sequence[int], end: Sequence[int], value: float = 0.0, hint: str = "pad") -> str:
        """Constant padding of every axis (``begin`` then ``end`` per axis, ONNX's pads order)."""
        return self.op("Pad", [x, self.ints([*begin, *end], "pads"), self.scalar(value, f"{hint}_value")], hint,
                       mode="constant")


def _reshaped(blob: Blob, shape: tuple[int, ...]) -> Blob:
    """``blob`` with ``shape`` (one ``-1`` inferred) without copying: a numpy view when one exists, else `Reshaped`."""
    size = math.prod(int(d) for d in blob.shape)
    if -1 in shape:
        known = math.prod(d for d in shape if d != -1)
        shape = tuple(size // known if d == -1 else d for d in shape)
    if math.prod(shape) != size:
        raise ValueError(f"cannot reshape a weight of shape {tuple(blob.shape)} to {shape}")
    if tuple(int(d) for d in blob.shape) == shape:
        return blob
    if isinstance(blob, Reshaped):
        return Reshaped(blob.view, shape)
    if isinstance(blob, np.ndarray):
        view = blob.view()
        try:
            view.shape = shape  # a view or an AttributeError, never a copy
        except AttributeError:
            return Reshaped(blob, shape)
        return view
    return Reshaped(np.asarray(blob), shape)
