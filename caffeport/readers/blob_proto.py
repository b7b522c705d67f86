"""Decode a Caffe ``BlobProto`` into a numpy array without copying its payload.

Every encoding Caffe or a fork ever wrote is handled here, once, for both the
caffemodel reader and ``.binaryproto`` mean files:

- ``data`` (field 5) packed, or unpacked (one fixed32 per element: read as a
  stride-5 view over the memory map, still without a copy);
- ``double_data`` (field 8), packed or unpacked (stride 9);
- NVIDIA Caffe ``raw_data`` (field 12) typed by ``raw_data_type`` (field 10);
- the shape from ``shape`` (field 7) or the legacy num/channels/height/width
  (fields 1-4), the legacy dims winning as in Caffe's ``Blob::FromProto``.

The result is read-only when the buffer is (a read-only memory map).
"""

from __future__ import annotations

import math

import numpy as np

from caffeport.readers.wire import FIXED32, FIXED64, LENGTH, VARINT, Reader, signed64

_LEGACY_DIMS = {1: 0, 2: 1, 3: 2, 4: 3}  # num, channels, height, width
_DATA, _DIFF, _SHAPE, _DOUBLE_DATA, _DOUBLE_DIFF = 5, 6, 7, 8, 9
_RAW_DATA_TYPE, _RAW_DIFF_TYPE, _RAW_DATA, _RAW_DIFF = 10, 11, 12, 13
_UNPACKED_FLOAT_TAG = (_DATA << 3) | FIXED32
_UNPACKED_DOUBLE_TAG = (_DOUBLE_DATA << 3) | FIXED64

#: NVIDIA Caffe's ``Type`` enum -> numpy dtype of ``raw_data``
RAW_DTYPES: dict[int, str] = {0: "<f8", 1: "<f4", 2: "<f2", 3: "<i4", 4: "<u4"}
_RAW_TYPE_NAMES = {0: "DOUBLE", 1: "FLOAT", 2: "FLOAT16", 3: "INT", 4: "UINT", 5: "BOOL"}


def _strided_run(reader: Reader, tag_pos: int, end: int, tag: int, width: int, dtype: str) -> tuple[np.ndarray, int]:
    """View a run of unpacked fixed-width elements (tag byte + value) as one array.

    Old Caffe files write ``repeated float data`` unpacked: each element is the
    one-byte tag followed by 4 bytes. Instead of looping in Python over millions
    of fields we find how long the run of identical tags is and return a
    strided view over the buffer. Returns the array and the position after it.
    """
    stride = 1 + width
    available = (end - tag_pos) // stride
    tags = np.frombuffer(reader.buf, dtype=np.uint8, count=(available - 1) * stride + 1 if available else 0,
                         offset=tag_pos)[::stride]
    mismatch = np.flatnonzero(tags != tag)
    count = int(mismatch[0]) if mismatch.size else int(tags.size)
    if count == 0:
        raise reader.error("truncated unpacked blob element", tag_pos)
    array = np.ndarray(shape=(count,), dtype=dtype, buffer=reader.buf, offset=tag_pos + 1, strides=(stride,))
    return array, tag_pos + count * stride


def _packed(reader: Reader, start: int, end: int, itemsize: int, dtype: str, what: str) -> np.ndarray:
    length = end - start
    if length % itemsize:
        raise reader.error(f"{what}: {length} bytes is not a whole number of {itemsize}-byte elements", start)
    return np.frombuffer(reader.buf, dtype=dtype, count=length // itemsize, offset=start)


def decode_blob(reader: Reader, start: int, end: int) -> np.ndarray:
    """Decode the BlobProto in ``buf[start:end]`` (see module docstring)."""
    legacy: list[int | None] = [None, None, None, None]
    shape: list[int] | None = None
    chunks: dict[str, list[np.ndarray]] = {"data": [], "double": [], "raw": []}
    raw_type: int | None = None
    raw_offset = start
    pos = start
    while pos < end:
        tag_pos = pos
        key, pos = reader.varint(pos, end)
        number, wire_type = key >> 3, key & 7
        if key == _UNPACKED_FLOAT_TAG:
            array, pos = _strided_run(reader, tag_pos, end, key, 4, "<f4")
            chunks["data"].append(array)
            continue
        if key == _UNPACKED_DOUBLE_TAG:
            array, pos = _strided_run(reader, tag_pos, end, key, 8, "<f8")
            chunks["double"].append(array)
            continue
        if wire_type == VARINT:
            value, pos = reader.varint(pos, end)
            if number in _LEGACY_DIMS:
                legacy[_LEGACY_DIMS[number]] = signed64(value)
            elif number == _RAW_DATA_TYPE:
                raw_type = value
            continue
        if wire_type == LENGTH:
            length, pos = reader.varint(pos, end)
            if length > end - pos:
                raise reader.error(
                    f"blob field {number} claims {length} bytes but only {end - pos} remain"
                    " (the file is truncated or corrupt)",
                    tag_pos,
                )
            payload_start, pos = pos, pos + length
            if number == _DATA:
                chunks["data"].append(_packed(reader, payload_start, pos, 4, "<f4", "blob data"))
            elif number == _DOUBLE_DATA:
                chunks["double"].append(_packed(reader, payload_start, pos, 8, "<f8", "blob double_data"))
            elif number == _RAW_DATA:
                chunks["raw"].append(np.frombuffer(reader.buf, dtype=np.uint8, count=length, offset=payload_start))
                raw_offset = payload_start
            elif number == _SHAPE:
                shape = _decode_shape(reader, payload_start, pos)
            elif number in _LEGACY_DIMS:  # a packed int32 is not how Caffe writes these, but is valid proto
                values = reader.varints(payload_start, pos)
                if values:
                    legacy[_LEGACY_DIMS[number]] = signed64(values[-1])
            continue
        if wire_type == FIXED32:
            pos += 4
        elif wire_type == FIXED64:
            pos += 8
        else:
            raise reader.error(f"blob field {number} has invalid wire type {wire_type}", tag_pos)
        if pos > end:
            raise reader.error(f"blob field {number}: truncated fixed-width value", tag_pos)

    if any(d is not None for d in legacy):
        dims = [d if d is not None else 0 for d in legacy]
    else:
        dims = shape if shape is not None else []
    for d in dims:
        if d < 0:
            raise reader.error(f"blob has a negative dimension in shape {tuple(dims)}", start)
    count = math.prod(dims)

    if chunks["raw"]:
        values = _raw_values(reader, chunks["raw"], raw_type, raw_offset)
    elif chunks["double"]:
        values = _join(chunks["double"])
    else:
        values = _join(chunks["data"]) if chunks["data"] else np.empty(0, dtype="<f4")
    if values.size != count:
        raise reader.error(
            f"blob holds {values.size} values but its shape {tuple(dims)} needs {count}", start
        )
    return values.reshape(dims)


def _join(parts: list[np.ndarray]) -> np.ndarray:
    """One chunk stays a view; several (legal in protobuf, rare in Caffe files) are concatenated."""
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _raw_values(reader: Reader, parts: list[np.ndarray], raw_type: int | None, offset: int) -> np.ndarray:
    raw_type = 0 if raw_type is None else raw_type  # proto2 default of NVIDIA's Type enum is DOUBLE
    dtype = RAW_DTYPES.get(raw_type)
    if dtype is None:
        name = _RAW_TYPE_NAMES.get(raw_type, str(raw_type))
        raise reader.error(f"blob raw_data_type {name} is not a weight type caffeport can read", offset)
    raw = _join(parts)
    itemsize = np.dtype(dtype).itemsize
    if raw.size % itemsize:
        raise reader.error(
            f"blob raw_data is {raw.size} bytes, not a whole number of {itemsize}-byte elements", offset
        )
    return raw.view(dtype)


def _decode_shape(reader: Reader, start: int, end: int) -> list[int]:
    """BlobShape: ``repeated int64 dim = 1`` (packed or not)."""
    dims: list[int] = []
    for field in reader.fields(start, end):
        if field.number == 1:
            dims.extend(signed64(v) for v in reader.packed_varints(field))
    return dims
