"""Write a `Net` back to a binary V2 ``.caffemodel``, streaming the weights.

Why write Caffe's own format at all: a round trip through it is the strictest
test of the reader, and benchmarks need big caffemodels of real architectures
that nobody can download in CI. Both want files of several GB, so nothing here
ever holds a whole file, or a whole blob, in memory:

- protobuf puts a length before every embedded message, so each layer's size
  is worked out first. Parameters are small and are encoded up front; a blob's
  size follows from its shape and dtype alone, without looking at its values;
- then the layer's header is written and each blob's payload is streamed in
  pieces of at most `CHUNK_BYTES`, straight from the array's memory (for blobs
  read from a caffemodel that is the input's memory map).

What is written (field numbers from BVLC/NVIDIA ``caffe.proto``):

- NetParameter ``name`` (1), net inputs as ``input`` (3) + ``input_shape`` (8)
  when the caller passes them, one ``layer`` (100) per layer;
- LayerParameter ``name``, ``type``, ``bottom``, ``top``, ``blobs`` (1, 2, 3,
  4, 7) and each ``*_param`` dict of ``layer.params`` as its message, encoded
  with the schema of `caffeport.codec.caffe_schema`. Keys and fields the
  schema does not know (a fork's, kept by the prototxt reader) have no field
  number to write and are skipped;
- BlobProto ``shape`` (7) always, so legacy 4-D blobs stay 4-D and every blob
  reads back with the numpy shape it had; the payload by dtype: float32 as
  packed ``data`` (5), float64 as packed ``double_data`` (8), float16, int32 and
  uint32 as NVIDIA Caffe ``raw_data`` (12) typed by ``raw_data_type`` (10).

Repeated parameter fields are written unpacked and BlobShape ``dim`` packed,
as Caffe itself writes them, so any protobuf version reads the result.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from caffeport.codec import caffe_schema
from caffeport.codec.caffe_schema import FieldSpec
from caffeport.codec.wire import (
    FIXED32,
    FIXED64,
    LENGTH,
    VARINT,
    encode_delimited,
    encode_key,
    encode_varint,
)
from caffeport.errors import ModelStructureError
from caffeport.exporters.registry import RAW_BACKENDS, ExportOptions, register_exporter
from caffeport.io.output import atomic_output
from caffeport.ir import Layer, Net
from caffeport.readers.blob_proto import RAW_DTYPES
from caffeport.streaming.blocks import Blob, LazyBlob, Progress, iter_chunks

__all__ = ["CHUNK_BYTES", "LazyBlob", "encode_message", "write_caffemodel", "write_caffemodel_stream"]

#: the most payload bytes converted and handed to ``write`` at once
CHUNK_BYTES = 16 * 1024 * 1024

# NetParameter / LayerParameter / BlobProto field numbers
_NET_NAME, _NET_INPUT, _NET_INPUT_SHAPE, _NET_LAYER = 1, 3, 8, 100
_NAME, _TYPE, _BOTTOM, _TOP, _BLOBS = 1, 2, 3, 4, 7
_BLOB_DATA, _BLOB_SHAPE, _BLOB_DOUBLE_DATA, _BLOB_RAW_DATA_TYPE, _BLOB_RAW_DATA = 5, 7, 8, 10, 12

#: the V2 LayerParameter field number of each ``*_param`` key
_PARAM_FIELDS: dict[str, int] = {key: number for number, (key, _) in caffe_schema.LAYER_PARAMS.items()}
#: the repeated fields caffe.proto declares ``[packed = true]`` (besides the blob payloads)
_PACKED: frozenset[tuple[str, str]] = frozenset({("BlobShape", "dim")})
_ENUM_NUMBERS: dict[str, dict[str, int]] = {
    enum: {name: number for number, name in values.items()} for enum, values in caffe_schema.ENUMS.items()
}
_RAW_TYPES: dict[str, int] = {dtype: number for number, dtype in RAW_DTYPES.items()}


# --------------------------------------------------------------------------
# Wire primitives


def _text(number: int, text: str) -> bytes:
    return encode_delimited(number, text.encode("utf-8"))


# --------------------------------------------------------------------------
# *_param messages


def encode_message(message: str, values: Mapping[str, Any]) -> bytes:
    """The wire bytes of ``message`` holding ``values`` (a dict as `caffe_schema.normalize` gives).

    Fields are written in field-number order, as Caffe writes them. Fields the
    schema does not know are skipped. A value a field cannot hold raises
    `ModelStructureError` naming the field.
    """
    out = bytearray()
    for spec in sorted(caffe_schema.MESSAGES.get(message, {}).values(), key=lambda s: s.number):
        if spec.name in values:
            out += _encode_field(message, spec, values[spec.name])
    return bytes(out)


def _encode_field(message: str, spec: FieldSpec, value: Any) -> bytes:
    occurrences = list(value) if spec.repeated and isinstance(value, (list, tuple, np.ndarray)) else [value]
    try:
        if (message, spec.name) in _PACKED:
            packed = b"".join(encode_varint(_integer(spec, v)) for v in occurrences)
            return encode_delimited(spec.number, packed) if packed else b""
        return b"".join(_encode_one(spec, v) for v in occurrences)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        raise ModelStructureError(f"{message}.{spec.name}: cannot write {value!r} as {spec.kind}: {exc}") from None


def _encode_one(spec: FieldSpec, value: Any) -> bytes:
    """One occurrence of a field: its key and value."""
    kind = spec.kind
    if kind == "message":
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a {spec.type_name} dict")
        return encode_delimited(spec.number, encode_message(spec.type_name or "", value))
    if kind == "string":
        if not isinstance(value, str):
            raise TypeError("expected a str")
        return _text(spec.number, value)
    if kind == "bytes":
        return encode_delimited(spec.number, bytes(value))
    if kind == "float":
        return encode_key(spec.number, FIXED32) + struct.pack("<f", float(value))
    if kind == "double":
        return encode_key(spec.number, FIXED64) + struct.pack("<d", float(value))
    return encode_key(spec.number, VARINT) + encode_varint(_integer(spec, value))


def _integer(spec: FieldSpec, value: Any) -> int:
    """The varint value of an integer, bool or enum field, range-checked so the file reads back."""
    if spec.kind == "enum" and isinstance(value, str):
        numbers = _ENUM_NUMBERS.get(spec.type_name or "", {})
        if value not in numbers:
            raise ValueError(f"not a {spec.type_name} value")
        return numbers[value]
    if spec.kind == "bool":
        if not isinstance(value, (bool, int, np.bool_, np.integer)):
            raise TypeError("expected a bool")
        return int(bool(value))
    number = int(value.__index__())  # refuses floats: 2.5 is no uint32
    bits = 64 if spec.kind.endswith("64") else 32
    signed = not spec.kind.startswith("u")
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not low <= number < high:
        raise ValueError("out of range")
    if spec.kind.startswith("sint"):
        return (number << 1) ^ (number >> 63)
    return number


def _encode_params(layer: Layer) -> bytes:
    """The layer's ``*_param`` messages, in field-number order; unknown keys skipped."""
    out = bytearray()
    known = sorted((_PARAM_FIELDS[key], key) for key in layer.params if key in _PARAM_FIELDS)
    for number, key in known:
        values = layer.params[key]
        if not isinstance(values, Mapping):
            continue
        try:
            out += encode_delimited(number, encode_message(caffe_schema.PARAM_KEY_BY_NAME[key], values))
        except ModelStructureError as exc:
            raise ModelStructureError(f"{key}: {exc.message}", layer=layer.name) from None
    return bytes(out)


# --------------------------------------------------------------------------
# Blobs


@dataclass(frozen=True)
class _BlobPlan:
    """One blob field, sized before any value is read: ``prefix``, ``count`` values of ``dtype``, ``suffix``."""

    prefix: bytes
    dtype: np.dtype[Any]
    count: int
    suffix: bytes
    blob: Blob

    @property
    def size(self) -> int:
        return len(self.prefix) + self.count * self.dtype.itemsize + len(self.suffix)


def _payload_encoding(dtype: np.dtype[Any]) -> tuple[bytes, int, np.dtype[Any]]:
    """(fields before the payload, payload field number, little-endian dtype written) for ``dtype``."""
    little = dtype.newbyteorder("<")
    if little == np.dtype("<f4"):
        return b"", _BLOB_DATA, little
    if little == np.dtype("<f8"):
        return b"", _BLOB_DOUBLE_DATA, little
    raw_type = _RAW_TYPES.get(little.str)
    if raw_type is None:
        raise ValueError(f"dtype {dtype} has no Caffe encoding (float32, float64, float16, int32 and uint32 have)")
    return encode_key(_BLOB_RAW_DATA_TYPE, VARINT) + encode_varint(raw_type), _BLOB_RAW_DATA, little


def _plan_blob(blob: Blob, layer: str, index: int) -> _BlobPlan:
    """Size one BlobProto from shape and dtype; its fields in number order, as Caffe writes them."""
    shape = tuple(int(d) for d in blob.shape)
    try:
        type_field, payload_field, dtype = _payload_encoding(np.dtype(blob.dtype))
    except ValueError as exc:
        raise ModelStructureError(f"blob {index}: {exc}", layer=layer) from None
    if any(d < 0 for d in shape):
        raise ModelStructureError(f"blob {index} has a negative dimension in shape {shape}", layer=layer)
    count = math.prod(shape)
    shape_field = encode_delimited(_BLOB_SHAPE, encode_message("BlobShape", {"dim": list(shape)}))
    payload_header = encode_key(payload_field, LENGTH) + encode_varint(count * dtype.itemsize)
    if payload_field < _BLOB_SHAPE:  # data (5) precedes shape (7)
        before, after = payload_header, shape_field
    else:
        before, after = shape_field + type_field + payload_header, b""
    message_size = len(before) + count * dtype.itemsize + len(after)
    prefix = encode_key(_BLOBS, LENGTH) + encode_varint(message_size) + before
    return _BlobPlan(prefix, dtype, count, after, blob)


def _write_all(handle: BinaryIO, data: bytes | memoryview) -> int:
    """Write every byte: a raw (unbuffered) file may take fewer per call."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        done += handle.write(view[done:])
    return done


def _write_payload(handle: BinaryIO, plan: _BlobPlan, layer: str, index: int) -> int:
    """Stream the blob's values; a lazy blob giving the wrong number of them is an error."""
    max_elements = max(1, CHUNK_BYTES // plan.dtype.itemsize)
    written = seen = 0
    for chunk in iter_chunks(plan.blob, max_elements * plan.dtype.itemsize, plan.dtype, release_source=True):
        data = np.ascontiguousarray(chunk, dtype=plan.dtype).reshape(-1)
        seen += data.size
        if seen > plan.count:
            break
        written += _write_all(handle, memoryview(data).cast("B"))
    if seen != plan.count:
        raise ModelStructureError(
            f"blob {index} gave {'more than ' if seen > plan.count else ''}{seen} values but its shape "
            f"{tuple(plan.blob.shape)} needs {plan.count}",
            layer=layer,
        )
    return written


# --------------------------------------------------------------------------
# Layers and nets


def _layer_header(layer: Layer) -> bytes:
    return b"".join(
        [
            _text(_NAME, layer.name),
            _text(_TYPE, layer.type),
            *(_text(_BOTTOM, bottom) for bottom in layer.bottoms),
            *(_text(_TOP, top) for top in layer.tops),
        ]
    )


def _write_layer(handle: BinaryIO, layer: Layer) -> int:
    """One ``layer`` field: sized first, then header, blobs streamed, parameters."""
    header = _layer_header(layer)
    plans = [_plan_blob(blob, layer.name, i) for i, blob in enumerate(layer.blobs)]
    params = _encode_params(layer)
    size = len(header) + sum(plan.size for plan in plans) + len(params)
    written = _write_all(handle, encode_key(_NET_LAYER, LENGTH) + encode_varint(size) + header)
    for i, plan in enumerate(plans):
        written += _write_all(handle, plan.prefix)
        written += _write_payload(handle, plan, layer.name, i)
        written += _write_all(handle, plan.suffix)
    return written + _write_all(handle, params)


def _net_inputs(inputs: Mapping[str, Sequence[int]]) -> bytes:
    """``input`` names, then one ``input_shape`` per input when any shape is known (Caffe pairs them by index)."""
    names = b"".join(_text(_NET_INPUT, name) for name in inputs)
    if not any(len(shape) for shape in inputs.values()):
        return names
    shapes = b"".join(
        encode_delimited(_NET_INPUT_SHAPE, encode_message("BlobShape", {"dim": [int(d) for d in shape]}))
        for shape in inputs.values()
    )
    return names + shapes


def write_caffemodel_stream(
    handle: BinaryIO,
    name: str,
    layers: Iterable[Layer],
    *,
    inputs: Mapping[str, Sequence[int]] | None = None,
) -> int:
    """Write a V2 NetParameter to the binary ``handle``; returns the number of bytes written.

    ``layers`` is consumed one layer at a time, so it may be a generator. A
    layer's blobs may be numpy arrays or `LazyBlob` objects. ``inputs`` (name
    -> shape) become NetParameter ``input``/``input_shape``: give them only for
    a net without ``Input`` layers, or Caffe would see each input twice.
    On error the stream holds a partial file: `write_caffemodel` removes it.
    """
    written = _write_all(handle, _text(_NET_NAME, name)) if name else 0
    if inputs:
        written += _write_all(handle, _net_inputs(inputs))
    for layer in layers:
        written += _write_layer(handle, layer)
    return written


def write_caffemodel(net: Net, path: str | os.PathLike[str], *, force: bool = False) -> None:
    """Write ``net`` to ``path`` as a binary V2 caffemodel, all or nothing.

    Refuses to overwrite an existing file unless ``force``, and always refuses
    the net's own input files (their blobs are views onto them). Net inputs
    are written as NetParameter inputs unless an ``Input`` layer declares them.
    """
    sources = (net.caffemodel_path, net.prototxt_path)
    with atomic_output(path, force=force, inputs=sources) as tmp:
        write_caffe_export(net, tmp, ExportOptions())


@register_exporter("caffe", suffix=".caffemodel", default_backend="caffe", backends=RAW_BACKENDS,
                   description="a current V2 binary .caffemodel (upgrades V1/V0/fp16-only readers' inputs)")
def write_caffe_export(net: Net, path: Path, options: ExportOptions) -> None:
    """The `caffe` format: the (transformed) IR as a V2 caffemodel at ``path``."""
    inputs = {} if any(layer.type == "Input" for layer in net.layers) else net.inputs
    blobs = [b for layer in net.layers for b in layer.blobs]
    progress = Progress(options.progress, sum(math.prod(b.shape) * np.dtype(b.dtype).itemsize for b in blobs),
                        len(blobs))

    def written_as_they_go() -> Iterator[Layer]:
        for index, layer in enumerate(net.layers):
            yield layer  # the writer asks for the next one once this one is written
            for j, blob in enumerate(layer.blobs):
                progress.wrote(math.prod(blob.shape) * np.dtype(blob.dtype).itemsize, (index, j))

    with open(path, "wb") as handle:
        write_caffemodel_stream(handle, net.name, written_as_they_go(), inputs=inputs)
