"""The ONNX messages caffeport writes, encoded with its own protobuf encoder: no ``import onnx`` to export.

Why not the onnx package's classes: importing onnx costs about a second of
CPU (its ``ml_dtypes`` dependency alone 0.7 s here, benchmarks/RESULTS.md
"ONNX export (issue 11)"), which is more than streaming a 553 MB VGG16 takes.
The exporter builds these small mutable records instead, with the field
names of onnx's Python classes (``node.input``, ``graph.initializer``,
``tensor.raw_data`` ...), and encodes them with
`caffeport.codec.wire`'s encoder. onnx itself still checks every exported
model (`caffeport.onnx.stream.Check`, in a child process that runs while the
weights are written) and parses these bytes for the Python API's
``to_onnx`` (`to_model_proto`).

The field numbers are onnx.proto's (onnx/onnx.in.proto;
tests/onnx/test_onnx_proto.py compares every one with the installed onnx's
descriptors). The bytes are those onnx's own ``SerializeToString`` gives for
the same message: fields in number order, repeated numbers unpacked (onnx.proto
is proto2 and declares none packed), a field written exactly when onnx's
helpers set it; the tests compare the two encodings byte for byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffeport.codec.wire import FIXED32, VARINT, encode_delimited, encode_key, encode_varint
from caffeport.errors import CaffeportError

ONNX_MISSING = "ONNX export needs the onnx package: pip install 'caffeport[onnx]'"
#: TensorProto.DataType values caffeport writes
FLOAT, INT32, INT64, BOOL = 1, 6, 7, 9
#: TensorProto.DataLocation.EXTERNAL
EXTERNAL = 1
#: numpy dtype -> TensorProto.DataType, for `Tensor.from_array`
_DATA_TYPES = {np.dtype("float32"): FLOAT, np.dtype("int32"): INT32, np.dtype("int64"): INT64,
               np.dtype("bool"): BOOL}
#: AttributeProto.AttributeType values
_ATTR_FLOAT, _ATTR_INT, _ATTR_STRING, _ATTR_TENSOR, _ATTR_FLOATS, _ATTR_INTS, _ATTR_STRINGS = 1, 2, 3, 4, 6, 7, 8

#: the field numbers used below, by message and field name (checked against onnx's descriptors by the tests)
FIELDS: dict[str, dict[str, int]] = {
    "ModelProto": {"ir_version": 1, "producer_name": 2, "producer_version": 3, "doc_string": 6, "graph": 7,
                   "opset_import": 8, "metadata_props": 14},
    "OperatorSetIdProto": {"domain": 1, "version": 2},
    "StringStringEntryProto": {"key": 1, "value": 2},
    "GraphProto": {"node": 1, "name": 2, "initializer": 5, "input": 11, "output": 12, "value_info": 13},
    "NodeProto": {"input": 1, "output": 2, "name": 3, "op_type": 4, "attribute": 5},
    "AttributeProto": {"name": 1, "f": 2, "i": 3, "s": 4, "t": 5, "floats": 7, "ints": 8, "strings": 9,
                       "type": 20},
    "TensorProto": {"dims": 1, "data_type": 2, "name": 8, "raw_data": 9, "external_data": 13, "data_location": 14},
    "ValueInfoProto": {"name": 1, "type": 2},
    "TypeProto": {"tensor_type": 1},
    "TypeProto.Tensor": {"elem_type": 1, "shape": 2},
    "TensorShapeProto": {"dim": 1},
    "TensorShapeProto.Dimension": {"dim_value": 1, "dim_param": 2},
}
_F = FIELDS


def _string(number: int, text: str) -> bytes:
    return encode_delimited(number, text.encode("utf-8"))


def _int(number: int, value: int) -> bytes:
    return encode_key(number, VARINT) + encode_varint(int(value))


def _ints(number: int, values: list[int]) -> bytes:
    """A repeated int field, unpacked (a key before each value), as proto2 writes it."""
    key = encode_key(number, VARINT)
    return b"".join(key + encode_varint(int(v)) for v in values)


def _floats(number: int, values: list[float]) -> bytes:
    key = encode_key(number, FIXED32)
    return b"".join(key + struct.pack("<f", float(v)) for v in values)


def _entries(number: int, entries: list[Entry]) -> bytes:
    return b"".join(encode_delimited(number, entry.encode()) for entry in entries)


@dataclass
class Entry:
    """A StringStringEntryProto (metadata_props, external_data)."""

    key: str
    value: str

    def encode(self) -> bytes:
        fields = _F["StringStringEntryProto"]
        return _string(fields["key"], self.key) + _string(fields["value"], self.value)


@dataclass
class Tensor:
    """A TensorProto: dims, type, name and its values as ``raw_data`` (little-endian), or external data."""

    name: str
    dims: list[int]
    data_type: int = FLOAT
    #: None: no raw_data field (the values are streamed after `header`, or live in external data)
    raw_data: bytes | None = None
    data_location: int = 0
    external_data: list[Entry] = field(default_factory=list)

    @classmethod
    def from_array(cls, array: np.ndarray, name: str) -> Tensor:
        """``array`` (float32, int32, int64 or bool) as a tensor holding its values, as onnx.numpy_helper.from_array."""
        array = np.asarray(array)
        data_type = _DATA_TYPES.get(array.dtype)
        if data_type is None:
            raise TypeError(f"caffeport writes float32 and int64 ONNX tensors, not {array.dtype}")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        return cls(name=name, dims=[int(d) for d in array.shape], data_type=data_type, raw_data=data)

    def header(self) -> bytes:
        """Everything but ``raw_data``: what precedes streamed values (`caffeport.onnx.stream`)."""
        fields = _F["TensorProto"]
        return _ints(fields["dims"], self.dims) + _int(fields["data_type"], self.data_type) \
            + _string(fields["name"], self.name)

    def encode(self) -> bytes:
        fields = _F["TensorProto"]
        out = self.header()
        if self.raw_data is not None:
            out += encode_delimited(fields["raw_data"], self.raw_data)
        if self.data_location:
            out += _entries(fields["external_data"], self.external_data)
            out += _int(fields["data_location"], self.data_location)
        return out


@dataclass
class Attribute:
    """An AttributeProto: a float, int, string, tensor, or a list of floats, ints or strings."""

    name: str
    value: Any

    def encode(self) -> bytes:
        fields = _F["AttributeProto"]
        value = self.value
        out = _string(fields["name"], self.name)
        if isinstance(value, bool | int | np.integer):
            return out + _int(fields["i"], int(value)) + _int(fields["type"], _ATTR_INT)
        if isinstance(value, float | np.floating):
            return out + _floats(fields["f"], [value]) + _int(fields["type"], _ATTR_FLOAT)
        if isinstance(value, str | bytes):
            data = value.encode("utf-8") if isinstance(value, str) else value
            return out + encode_delimited(fields["s"], data) + _int(fields["type"], _ATTR_STRING)
        if isinstance(value, Tensor):
            return out + encode_delimited(fields["t"], value.encode()) + _int(fields["type"], _ATTR_TENSOR)
        values = list(value)
        if all(isinstance(v, bool | int | np.integer) for v in values):  # (an empty list: ints, as onnx.helper)
            return out + _ints(fields["ints"], values) + _int(fields["type"], _ATTR_INTS)
        if all(isinstance(v, int | float | np.number) for v in values):
            return out + _floats(fields["floats"], values) + _int(fields["type"], _ATTR_FLOATS)
        if all(isinstance(v, str) for v in values):
            return out + b"".join(_string(fields["strings"], v) for v in values) + _int(fields["type"], _ATTR_STRINGS)
        raise TypeError(f"attribute {self.name!r}: caffeport writes no ONNX attribute of {value!r}")


@dataclass
class Node:
    """A NodeProto of the default domain."""

    op_type: str
    input: list[str]
    output: list[str]
    name: str = ""
    attribute: list[Attribute] = field(default_factory=list)

    def encode(self) -> bytes:
        fields = _F["NodeProto"]
        return (b"".join(_string(fields["input"], name) for name in self.input)
                + b"".join(_string(fields["output"], name) for name in self.output)
                + (_string(fields["name"], self.name) if self.name else b"")
                + _string(fields["op_type"], self.op_type)
                + b"".join(encode_delimited(fields["attribute"], a.encode()) for a in self.attribute))


def make_node(op_type: str, inputs: list[str], outputs: list[str], name: str = "", **attrs: Any) -> Node:
    """A node with its attributes (sorted by name, as onnx.helper.make_node writes them)."""
    return Node(op_type, list(inputs), list(outputs), name,
                [Attribute(key, value) for key, value in sorted(attrs.items())])


@dataclass
class ValueInfo:
    """A ValueInfoProto of a tensor: element type and shape (a dim: a size, a symbol, or None for unknown)."""

    name: str
    elem_type: int = FLOAT
    shape: list[int | str | None] | None = field(default_factory=list)

    def encode(self) -> bytes:
        tensor = _int(_F["TypeProto.Tensor"]["elem_type"], self.elem_type)
        if self.shape is not None:
            dims = b""
            for dim in self.shape:
                if isinstance(dim, str):
                    entry = _string(_F["TensorShapeProto.Dimension"]["dim_param"], dim)
                elif dim is None:
                    entry = b""
                else:
                    entry = _int(_F["TensorShapeProto.Dimension"]["dim_value"], dim)
                dims += encode_delimited(_F["TensorShapeProto"]["dim"], entry)
            tensor += encode_delimited(_F["TypeProto.Tensor"]["shape"], dims)
        type_proto = encode_delimited(_F["TypeProto"]["tensor_type"], tensor)
        return _string(_F["ValueInfoProto"]["name"], self.name) + encode_delimited(_F["ValueInfoProto"]["type"],
                                                                                    type_proto)


@dataclass
class Graph:
    """A GraphProto."""

    name: str
    node: list[Node] = field(default_factory=list)
    initializer: list[Tensor] = field(default_factory=list)
    input: list[ValueInfo] = field(default_factory=list)
    output: list[ValueInfo] = field(default_factory=list)
    value_info: list[ValueInfo] = field(default_factory=list)

    def encode(self, initializers: bool = True) -> bytes:
        """The graph; without ``initializers`` every field but those (`caffeport.onnx.stream` adds them)."""
        fields = _F["GraphProto"]
        out = (b"".join(encode_delimited(fields["node"], node.encode()) for node in self.node)
               + _string(fields["name"], self.name))
        if initializers:
            out += b"".join(encode_delimited(fields["initializer"], t.encode()) for t in self.initializer)
        return (out + b"".join(encode_delimited(fields["input"], v.encode()) for v in self.input)
                + b"".join(encode_delimited(fields["output"], v.encode()) for v in self.output)
                + b"".join(encode_delimited(fields["value_info"], v.encode()) for v in self.value_info))


@dataclass
class Model:
    """A ModelProto with one graph and the default domain's opset."""

    graph: Graph
    ir_version: int
    opset: int
    producer_name: str = "caffeport"
    producer_version: str = ""
    doc_string: str = ""
    metadata_props: list[Entry] = field(default_factory=list)

    def props(self) -> dict[str, str]:
        return {entry.key: entry.value for entry in self.metadata_props}

    def set_props(self, props: dict[str, str]) -> None:
        """Replace metadata_props with ``props`` (onnx.helper.set_model_props)."""
        self.metadata_props = [Entry(key, value) for key, value in props.items()]

    def encode(self, graph: bool = True) -> bytes:
        """The model; without ``graph`` every field but the graph (`caffeport.onnx.stream` adds it)."""
        fields = _F["ModelProto"]
        opset = _string(_F["OperatorSetIdProto"]["domain"], "") + _int(_F["OperatorSetIdProto"]["version"],
                                                                        self.opset)
        out = (_int(fields["ir_version"], self.ir_version) + _string(fields["producer_name"], self.producer_name)
               + _string(fields["producer_version"], self.producer_version)
               + _string(fields["doc_string"], self.doc_string))
        if graph:
            out += encode_delimited(fields["graph"], self.graph.encode())
        return out + encode_delimited(fields["opset_import"], opset) + _entries(fields["metadata_props"],
                                                                                 self.metadata_props)


def require_onnx_installed() -> None:
    """A one-line error saying how to install onnx when it is not importable, without importing it (the writer
    only needs it for the checker, which runs in a child process)."""
    import importlib.util

    try:
        found = importlib.util.find_spec("onnx") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise CaffeportError(ONNX_MISSING)


def require_onnx() -> Any:
    """The ``onnx`` module (imported here: about a second), or a one-line error saying how to install it."""
    try:
        import onnx
    except ImportError as exc:
        raise CaffeportError(ONNX_MISSING) from exc
    return onnx


def to_model_proto(model: Model) -> Any:
    """``model`` as an ``onnx.ModelProto`` (parsed from caffeport's bytes: one encoding for files and the API)."""
    return require_onnx().ModelProto.FromString(model.encode())


__all__ = ["EXTERNAL", "FIELDS", "FLOAT", "INT64", "ONNX_MISSING", "Attribute", "Entry", "Graph", "Model", "Node",
           "Tensor", "ValueInfo", "make_node", "require_onnx", "require_onnx_installed", "to_model_proto"]
