"""Protocol buffer wire format primitives over a byte buffer (usually a memory map).

Caffe's files are proto2 messages. We decode them ourselves instead of using
the protobuf runtime so that there is no 2 GB limit, no generated code, and
blob payloads stay where they are in the memory map (zero copy): the walker
below yields *spans* for length-delimited fields and never slices them.

Every malformed length or tag raises `DecodeError` with the absolute byte
offset, checked against the enclosing message's end before anything is read
or allocated. Files come from the internet, so the reader also bounds what a
file can make it keep: `Reader.charge` counts the Python objects decoding
retains (layers, names, parameter values) against `MAX_OBJECTS`, which no real
net comes near, so a few bytes per object cannot add up to gigabytes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

from caffeport.errors import DecodeError

VARINT = 0
FIXED64 = 1
LENGTH = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5

_MAX_VARINT_BYTES = 10
_UINT64_MASK = (1 << 64) - 1
#: protobuf's largest field number (2^29 - 1)
MAX_FIELD_NUMBER = (1 << 29) - 1
#: decoded objects one file may produce (layers, blobs, strings, parameter values): the largest real nets
#: have a few thousand layers and well under a million such objects
MAX_OBJECTS = 2_000_000
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


class Field(NamedTuple):
    """One field occurrence inside a message.

    ``value`` is the integer for varint fields and the raw little-endian integer
    for fixed32/fixed64 ones; for length-delimited fields ``start``/``end`` span
    the payload and ``value`` is its length. ``offset`` is where the tag starts.
    (A named tuple: the walker makes one per field, and tuples are the cheapest
    immutable objects to make.)
    """

    number: int
    wire_type: int
    value: int
    start: int
    end: int
    offset: int

    def as_float(self) -> float:
        return float(_FLOAT.unpack(self.value.to_bytes(4, "little"))[0])

    def as_double(self) -> float:
        return float(_DOUBLE.unpack(self.value.to_bytes(8, "little"))[0])


class Reader:
    """Walks the fields of messages inside one buffer.

    ``path`` is only used in error messages; ``layer`` can be set by callers
    while they decode a layer so that errors name it too.
    """

    def __init__(self, buf: bytes | bytearray | memoryview, path: str | None = None) -> None:
        self.buf = memoryview(buf).cast("B") if not isinstance(buf, bytes) else buf
        self.path = path
        self.layer: str | None = None
        #: objects left before `charge` refuses the file
        self.budget = MAX_OBJECTS

    def error(self, message: str, offset: int) -> DecodeError:
        return DecodeError(message, path=self.path, layer=self.layer, offset=offset)

    def charge(self, count: int, offset: int) -> None:
        """Account for ``count`` decoded objects kept in memory; refuse the file past `MAX_OBJECTS`."""
        self.budget -= count
        if self.budget < 0:
            raise self.error(
                f"the file holds more than {MAX_OBJECTS:,} layers, blobs, names and parameter values, far more"
                " than any real net (a corrupt or hostile file)",
                offset,
            )

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        """Decode a varint at ``pos`` that must finish before ``end``.

        As in protobuf, at most 10 bytes and bits past the 64th are dropped, so
        every value fits a uint64.
        """
        buf = self.buf
        result = 0
        shift = 0
        start = pos
        while True:
            if pos >= end:
                raise self.error("truncated varint (the file or message ends inside a number)", start)
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result & _UINT64_MASK, pos
            shift += 7
            if pos - start >= _MAX_VARINT_BYTES:
                raise self.error("varint longer than 10 bytes", start)

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """Yield the fields of the message occupying ``buf[start:end]``."""
        buf = self.buf
        pos = start
        while pos < end:
            offset = pos
            key = buf[pos]  # one-byte varints (most tags and lengths) without a call
            if key < 0x80:
                pos += 1
            else:
                key, pos = self.varint(pos, end)
            number = key >> 3
            wire_type = key & 7
            if number == 0 or number > MAX_FIELD_NUMBER:
                raise self.error(
                    f"invalid field number {number} (this is not a Caffe protobuf file here)", offset
                )
            if wire_type == VARINT:
                value, pos = self.varint(pos, end)
                yield Field(number, wire_type, value, pos, pos, offset)
            elif wire_type == LENGTH:
                if pos < end and buf[pos] < 0x80:
                    length = buf[pos]
                    pos += 1
                else:
                    length, pos = self.varint(pos, end)
                if length > end - pos:
                    raise self.error(
                        f"field {number} claims {length} bytes but only {end - pos} remain in its message"
                        " (the file is truncated or corrupt)",
                        offset,
                    )
                yield Field(number, wire_type, length, pos, pos + length, offset)
                pos += length
            elif wire_type == FIXED32:
                if end - pos < 4:
                    raise self.error(f"field {number}: truncated 4-byte value", offset)
                value = int.from_bytes(self.buf[pos : pos + 4], "little")
                yield Field(number, wire_type, value, pos, pos + 4, offset)
                pos += 4
            elif wire_type == FIXED64:
                if end - pos < 8:
                    raise self.error(f"field {number}: truncated 8-byte value", offset)
                value = int.from_bytes(self.buf[pos : pos + 8], "little")
                yield Field(number, wire_type, value, pos, pos + 8, offset)
                pos += 8
            else:
                raise self.error(
                    f"field {number} has wire type {wire_type}, which Caffe never writes"
                    " (deprecated group or invalid)",
                    offset,
                )

    def string(self, field: Field) -> str:
        """A length-delimited field as UTF-8 text (invalid bytes are an error naming the offset)."""
        if field.wire_type != LENGTH:
            self.expect(field, LENGTH)
        self.budget -= 1
        if self.budget < 0:
            self.charge(0, field.offset)
        try:
            return str(self.buf[field.start : field.end], "utf-8")
        except UnicodeDecodeError as exc:
            raw = bytes(self.buf[field.start : min(field.end, field.start + 40)])
            raise self.error(
                f"field {field.number}: string is not valid UTF-8 ({raw!r})", field.start + exc.start
            ) from None

    def expect(self, field: Field, wire_type: int) -> None:
        if field.wire_type != wire_type:
            raise self.error(
                f"field {field.number} has wire type {field.wire_type}, expected {wire_type}", field.offset
            )

    def packed_varints(self, field: Field) -> list[int]:
        """All varints of a packed repeated field (or the one value of an unpacked occurrence)."""
        if field.wire_type == VARINT:
            self.charge(1, field.offset)
            return [field.value]
        self.expect(field, LENGTH)
        return self.varints(field.start, field.end)

    def varints(self, start: int, end: int) -> list[int]:
        """The varints packed back to back in ``buf[start:end]``."""
        values: list[int] = []
        pos = start
        while pos < end:
            value, pos = self.varint(pos, end)
            values.append(value)
        self.charge(len(values), start)
        return values


def signed64(value: int) -> int:
    """Two's-complement view of a varint that encodes a (negative) int32/int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def zigzag(value: int) -> int:
    """Decode a sint32/sint64 varint."""
    return (value >> 1) ^ -(value & 1)


# --------------------------------------------------------------------------
# The writing side of the same format: the caffemodel exporter, and the test and fuzz builders of Caffe files


def encode_varint(value: int) -> bytes:
    """A base-128 varint; a negative value as its 64-bit two's complement, as protobuf writes it."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_key(number: int, wire_type: int) -> bytes:
    """A field's tag: its number and wire type."""
    return encode_varint((number << 3) | wire_type)


def encode_delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field (a string, bytes, packed values or a nested message)."""
    return encode_key(number, LENGTH) + encode_varint(len(payload)) + payload
