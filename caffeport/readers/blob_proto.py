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

import itertools
import math
import threading

import numpy as np

from caffeport.codec.wire import FIXED32, FIXED64, LENGTH, MAX_FIELD_NUMBER, VARINT, Reader, signed64
from caffeport.errors import InputFileError
from caffeport.io.mapped import release_pages
from caffeport.io.output import block_deferred_signals

#: Caffe's ``kMaxBlobAxes``
MAX_AXES = 32
#: no shape may describe more elements than this, even with a zero dimension (8 bytes each must fit an int64)
_MAX_ELEMENTS = 1 << 59
#: what one blob counts against the reader's object budget (the array and its views)
_BLOB_COST = 4
#: elements compared at a time when scanning (unpacked tags, NaN checks)
_SCAN_BLOCK = 1 << 20
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
    The tags are compared a block at a time, so the scan's own memory stays
    small whatever the blob's size.
    """
    stride = 1 + width
    available = (end - tag_pos) // stride
    count = 0
    while count < available:
        block = min(_SCAN_BLOCK, available - count)
        tags = np.ndarray(shape=(block,), dtype=np.uint8, buffer=reader.buf, offset=tag_pos + count * stride,
                          strides=(stride,))
        mismatch = tags != tag
        if mismatch.any():
            count += int(mismatch.argmax())
            break
        count += block
    if count == 0:
        raise reader.error("truncated unpacked blob element", tag_pos)
    array = np.ndarray(shape=(count,), dtype=dtype, buffer=reader.buf, offset=tag_pos + 1, strides=(stride,))
    return array, tag_pos + count * stride


def _packed(reader: Reader, start: int, end: int, itemsize: int, dtype: str, what: str) -> np.ndarray:
    length = end - start
    if length % itemsize:
        raise reader.error(f"{what}: {length} bytes is not a whole number of {itemsize}-byte elements", start)
    return np.frombuffer(reader.buf, dtype=dtype, count=length // itemsize, offset=start)


class _Chunks:
    """The payload chunks of one encoding: a zero-copy view while there is one, a bytearray once there are more.

    Protobuf allows a repeated field to be split into any number of chunks. A
    list of arrays would let a file of tiny chunks cost ~100 bytes of memory
    per few bytes of file; appending to one buffer costs only the values.
    An empty chunk holds nothing but still marks the encoding as present
    (``seen``: an empty ``double_data`` makes an empty float64 blob).
    """

    __slots__ = ("extra", "first", "seen")

    def __init__(self) -> None:
        self.first: np.ndarray | None = None
        self.extra: bytearray | None = None
        self.seen = False

    def add(self, array: np.ndarray) -> None:
        self.seen = True
        if array.size == 0:
            return
        if self.first is None:
            self.first = array
            return
        if self.extra is None:
            self.extra = bytearray(self.first.tobytes())
        self.extra += array.tobytes()

    @property
    def size(self) -> int:
        """Bytes held."""
        if self.extra is not None:
            return len(self.extra)
        return 0 if self.first is None else int(self.first.size * self.first.itemsize)

    def array(self, dtype: str) -> np.ndarray:
        if self.extra is not None:
            return np.frombuffer(self.extra, dtype=dtype)
        return self.first if self.first is not None else np.empty(0, dtype=dtype)


def decode_blob(reader: Reader, start: int, end: int, *, standalone: bool = False) -> np.ndarray:
    """Decode the BlobProto in ``buf[start:end]`` (see module docstring).

    The shape is checked before any array is built: at most `MAX_AXES` axes,
    no negative dimension, no product that overflows 64 bits (numpy would
    refuse to even reshape an empty array to it), and exactly as many values
    as the shape needs.

    ``standalone`` is for a whole ``.binaryproto`` file: there a field no
    BlobProto has, or a legacy dimension written as a string, means the file
    is something else (a caffemodel's NetParameter, most likely), which is an
    `InputFileError` instead of fields silently skipped.
    """
    reader.charge(_BLOB_COST, start)
    legacy: list[int | None] = [None, None, None, None]
    shape: list[int] | None = None
    data, double, raw = _Chunks(), _Chunks(), _Chunks()
    raw_type: int | None = None
    raw_offset = start
    pos = start
    while pos < end:
        tag_pos = pos
        key, pos = reader.varint(pos, end)
        number, wire_type = key >> 3, key & 7
        if number == 0 or number > MAX_FIELD_NUMBER:
            raise reader.error(f"invalid field number {number} in a blob", tag_pos)
        if standalone and (number > _RAW_DIFF or (number in _LEGACY_DIMS and wire_type == LENGTH)):
            raise InputFileError(
                f"this is not a BlobProto (field {number}, wire type {wire_type} at byte offset {tag_pos}):"
                " a .caffemodel? Read it with caffeport.read / caffeport inspect", path=reader.path
            )
        one_byte_tag = pos == tag_pos + 1
        if key == _UNPACKED_FLOAT_TAG and one_byte_tag:
            array, pos = _strided_run(reader, tag_pos, end, key, 4, "<f4")
            data.add(array)
            continue
        if key == _UNPACKED_DOUBLE_TAG and one_byte_tag:
            array, pos = _strided_run(reader, tag_pos, end, key, 8, "<f8")
            double.add(array)
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
                data.add(_packed(reader, payload_start, pos, 4, "<f4", "blob data"))
            elif number == _DOUBLE_DATA:
                double.add(_packed(reader, payload_start, pos, 8, "<f8", "blob double_data"))
            elif number == _RAW_DATA:
                raw.add(np.frombuffer(reader.buf, dtype=np.uint8, count=length, offset=payload_start))
                raw_offset = payload_start
            elif number == _SHAPE:
                shape = _decode_shape(reader, payload_start, pos)
            elif number in _LEGACY_DIMS:  # a packed int32 is not how Caffe writes these, but is valid proto
                values = reader.varints(payload_start, pos)
                if values:
                    legacy[_LEGACY_DIMS[number]] = signed64(values[-1])
            continue
        if wire_type not in (FIXED32, FIXED64):
            raise reader.error(f"blob field {number} has invalid wire type {wire_type}", tag_pos)
        width = 4 if wire_type == FIXED32 else 8
        if pos + width > end:
            raise reader.error(f"blob field {number}: truncated fixed-width value", tag_pos)
        if key in (_UNPACKED_FLOAT_TAG, _UNPACKED_DOUBLE_TAG):  # one element behind an over-long tag encoding
            (data if width == 4 else double).add(
                np.frombuffer(reader.buf, dtype="<f4" if width == 4 else "<f8", count=1, offset=pos)
            )
        pos += width

    if any(d is not None for d in legacy):
        dims = [d if d is not None else 0 for d in legacy]
    else:
        dims = shape if shape is not None else []
    _check_dims(reader, dims, start)
    count = math.prod(dims)

    if raw.seen:
        values = _raw_values(reader, raw, raw_type, raw_offset)
    elif double.seen:
        values = double.array("<f8")
    else:
        values = data.array("<f4")
    if values.size != count:
        raise reader.error(
            f"blob holds {values.size} values but its shape {tuple(dims)} needs {count}", start
        )
    return values.reshape(dims)


def _check_dims(reader: Reader, dims: list[int], offset: int) -> None:
    if len(dims) > MAX_AXES:
        raise reader.error(f"blob has {len(dims)} axes; Caffe allows at most {MAX_AXES}", offset)
    for d in dims:
        if d < 0:
            raise reader.error(f"blob has a negative dimension in shape {tuple(dims)}", offset)
    if math.prod(d for d in dims if d) > _MAX_ELEMENTS:
        raise reader.error(
            f"blob shape {tuple(dims)} is astronomically large (more than 2^59 elements)", offset
        )


def _raw_values(reader: Reader, chunks: _Chunks, raw_type: int | None, offset: int) -> np.ndarray:
    raw_type = 0 if raw_type is None else raw_type  # proto2 default of NVIDIA's Type enum is DOUBLE
    dtype = RAW_DTYPES.get(raw_type)
    if dtype is None:
        name = _RAW_TYPE_NAMES.get(raw_type, str(raw_type))
        raise reader.error(f"blob raw_data_type {name} is not a weight type caffeport can read", offset)
    raw = chunks.array("u1")
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
            if len(dims) > MAX_AXES:
                raise reader.error(f"blob shape has more than {MAX_AXES} axes, Caffe's limit", field.offset)
    return dims


def nonfinite_counts(arrays: list[np.ndarray], *, threads: int = 2,
                     stop: threading.Event | None = None) -> list[tuple[int, int]]:
    """How many NaN and how many infinite values each floating-point blob holds.

    Scanned a block at a time (a block's sum is finite exactly when all its
    values are, up to a rare overflow that the exact count then clears), so
    no temporary the size of a blob is made. For a view onto a memory map
    the pages of each block are given back after it is scanned (they stay in
    the page cache), so checking every weight does not leave the whole file
    in the process's resident memory, which reading it never does. Above
    64 MB in all, ``threads`` threads share the blocks (numpy lets go of the
    GIL while it sums). Once ``stop`` is set the remaining blocks are skipped
    (a conversion that failed or was interrupted does not wait for the scan).
    """
    blocks = [(n, flat[i:i + _SCAN_BLOCK]) for n, flat in enumerate(a.reshape(-1) for a in arrays)
              if flat.dtype.kind == "f" for i in range(0, flat.size, _SCAN_BLOCK)]
    counts = [[0, 0] for _ in arrays]
    if threads > 1 and sum(block.nbytes for _, block in blocks) > _PARALLEL_SCAN_BYTES:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads, thread_name_prefix="caffeport-scan",
                                initializer=block_deferred_signals) as pool:  # Ctrl-C goes to the main thread
            results = list(pool.map(_block_counts, (block for _, block in blocks), itertools.repeat(stop)))
    else:
        results = [_block_counts(block, stop) for _, block in blocks]
    for (n, _), (nan, inf) in zip(blocks, results):
        counts[n][0] += nan
        counts[n][1] += inf
    return [(nan, inf) for nan, inf in counts]


_PARALLEL_SCAN_BYTES = 64 << 20


def _block_counts(block: np.ndarray, stop: threading.Event | None = None) -> tuple[int, int]:
    if stop is not None and stop.is_set():
        return 0, 0
    with np.errstate(all="ignore"):
        total = float(np.add.reduce(block, dtype=np.float64 if block.itemsize > 4 else np.float32))
    counts = (0, 0) if math.isfinite(total) else \
        (int(np.count_nonzero(np.isnan(block))), int(np.count_nonzero(np.isinf(block))))
    release_pages(block)  # a no-op unless the block is a view onto a model map
    return counts
