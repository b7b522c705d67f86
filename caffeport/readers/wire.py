"""Protocol buffer wire format primitives over a byte buffer (usually a memory map).

Caffe's files are proto2 messages. We decode them ourselves instead of using
the protobuf runtime so that there is no 2 GB limit, no generated code, and
blob payloads stay where they are in the memory map (zero copy): the walker
below yields *spans* for length-delimited fields and never slices them.

Every malformed length or tag raises `DecodeError` with the absolute byte
offset, checked against the enclosing message's end before anything is read
or allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from caffeport.errors import DecodeError

VARINT = 0
FIXED64 = 1
LENGTH = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5

_MAX_VARINT_BYTES = 10
_FLOAT = struct.Struct("<f")
_DOUBLE = struct.Struct("<d")


@dataclass(frozen=True, slots=True)
class Field:
    """One field occurrence inside a message.

    ``value`` is the integer for varint fields and the raw little-endian integer
    for fixed32/fixed64 ones; for length-delimited fields ``start``/``end`` span
    the payload and ``value`` is its length. ``offset`` is where the tag starts.
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

    def error(self, message: str, offset: int) -> DecodeError:
        return DecodeError(message, path=self.path, layer=self.layer, offset=offset)

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        """Decode a varint at ``pos`` that must finish before ``end``."""
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
                return result, pos
            shift += 7
            if pos - start >= _MAX_VARINT_BYTES:
                raise self.error("varint longer than 10 bytes", start)

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """Yield the fields of the message occupying ``buf[start:end]``."""
        pos = start
        while pos < end:
            offset = pos
            key, pos = self.varint(pos, end)
            number = key >> 3
            wire_type = key & 7
            if number == 0:
                raise self.error("invalid field number 0 (this is not a Caffe protobuf file here)", offset)
            if wire_type == VARINT:
                value, pos = self.varint(pos, end)
                yield Field(number, wire_type, value, pos, pos, offset)
            elif wire_type == LENGTH:
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
        self.expect(field, LENGTH)
        raw = bytes(self.buf[field.start : field.end])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.error(
                f"field {field.number}: string is not valid UTF-8 ({raw[:40]!r})", field.start + exc.start
            ) from None

    def expect(self, field: Field, wire_type: int) -> None:
        if field.wire_type != wire_type:
            raise self.error(
                f"field {field.number} has wire type {field.wire_type}, expected {wire_type}", field.offset
            )

    def packed_varints(self, field: Field) -> list[int]:
        """All varints of a packed repeated field (or the one value of an unpacked occurrence)."""
        if field.wire_type == VARINT:
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
        return values


def signed64(value: int) -> int:
    """Two's-complement view of a varint that encodes a (negative) int32/int64."""
    return value - (1 << 64) if value >= 1 << 63 else value


def zigzag(value: int) -> int:
    """Decode a sint32/sint64 varint."""
    return (value >> 1) ^ -(value & 1)
