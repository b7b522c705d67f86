"""Decode a schema-described protobuf message from the wire into caffeport's raw form.

The raw form (field name -> list of values) is exactly what the prototxt
parser produces, so `caffe_schema.normalize` turns either into the same plain
dict: a layer's parameters do not depend on which file they came from.
"""

from __future__ import annotations

from typing import Any

from caffeport.codec import caffe_schema
from caffeport.codec.caffe_schema import FieldSpec
from caffeport.codec.wire import FIXED32, FIXED64, LENGTH, VARINT, Field, Reader, signed64, zigzag

_MAX_DEPTH = 32
_VARINT_KINDS = frozenset({"int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"})


def decode_message(reader: Reader, start: int, end: int, message: str, depth: int = 0) -> dict[str, list[Any]]:
    """The raw form of the message ``message`` stored in ``buf[start:end]``.

    Fields the schema does not know are skipped: without a schema their wire
    bytes cannot be told apart (a string from a nested message), and none of
    them carries weights.
    """
    if depth > _MAX_DEPTH:
        raise reader.error(f"{message}: messages nested deeper than {_MAX_DEPTH} levels", start)
    reader.charge(1, start)
    specs = caffe_schema.MESSAGES.get(message, {})
    raw: dict[str, list[Any]] = {}
    for field in reader.fields(start, end):
        spec = specs.get(field.number)
        if spec is None:
            continue
        raw.setdefault(spec.name, []).extend(_values(reader, field, spec, depth))
    return raw


def _values(reader: Reader, field: Field, spec: FieldSpec, depth: int) -> list[Any]:
    kind = spec.kind
    if kind == "message":
        reader.expect(field, LENGTH)
        assert spec.type_name is not None
        return [decode_message(reader, field.start, field.end, spec.type_name, depth + 1)]
    if kind == "string":
        return [reader.string(field)]
    if kind == "bytes":
        reader.expect(field, LENGTH)
        reader.charge(1, field.offset)
        return [bytes(reader.buf[field.start : field.end])]
    if kind == "float":
        return _fixed(reader, field, FIXED32, "<f4")
    if kind == "double":
        return _fixed(reader, field, FIXED64, "<f8")
    if kind in _VARINT_KINDS:
        if field.wire_type not in (VARINT, LENGTH):
            reader.expect(field, VARINT)
        raw = reader.packed_varints(field)
        if kind in ("sint32", "sint64"):
            return [zigzag(v) for v in raw]
        if kind in ("int32", "int64", "enum"):
            return [_int32(signed64(v)) if kind == "int32" else signed64(v) for v in raw]
        return raw
    raise reader.error(f"field {spec.name}: unsupported schema kind {kind!r}", field.offset)


def _int32(value: int) -> int:
    """int32 fields are sign-extended to 64 bits on the wire, but a 32-bit writer may not have."""
    return value - (1 << 32) if (1 << 31) <= value < (1 << 32) else value


def _fixed(reader: Reader, field: Field, wire_type: int, dtype: str) -> list[float]:
    import numpy as np

    if field.wire_type == wire_type:
        reader.charge(1, field.offset)
        return [field.as_float() if wire_type == FIXED32 else field.as_double()]
    reader.expect(field, LENGTH)  # packed repeated float/double
    size = 4 if wire_type == FIXED32 else 8
    length = field.end - field.start
    if length % size:
        raise reader.error(f"packed field {field.number}: {length} bytes is not a multiple of {size}", field.offset)
    reader.charge(length // size, field.offset)
    return [float(v) for v in np.frombuffer(reader.buf, dtype=dtype, count=length // size, offset=field.start)]
