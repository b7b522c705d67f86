"""A msgpack document written piece by piece, the streaming core of the ``flax`` and ``ir`` formats.

The small parts (map and array headers, keys, numbers, strings) are encoded
by the ``msgpack`` package; for each array the format writes a binary or
extension header (`bin_header`, `ext_header`, in the smallest form msgpack
allows) and `Stream.reserve` leaves room for its bytes, which `Stream.fill`
then fills block by block with `caffeport.streaming.blocks.iter_placed`,
straight from the transform's view of the caffemodel's memory map (releasing
its pages): a multi-GB model never needs a second copy in memory, and a
transposed kernel is read in its own order rather than touched whole for
every block. msgpack is the only extra either format needs
(``pip install caffeport[msgpack]``); it is imported only when one is written.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from typing import Any, BinaryIO

import numpy as np

from caffeport.errors import ModelStructureError, OutputError
from caffeport.exporters.stored import CHUNK_BYTES
from caffeport.streaming.blocks import Blob, Progress, iter_placed, stream_placed

#: the largest msgpack binary string: an IR blob must fit in one
MAX_BIN_BYTES = 2**32 - 1

# msgpack type bytes (msgpack spec): bin 8/16/32, ext 8/16/32, fixext 1/2/4/8/16
_BIN_HEADERS = ((1 << 8, 0xC4, 1), (1 << 16, 0xC5, 2), (1 << 32, 0xC6, 4))
_EXT_HEADERS = ((1 << 8, 0xC7, 1), (1 << 16, 0xC8, 2), (1 << 32, 0xC9, 4))
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def bin_header(size: int) -> bytes:
    """The header of a binary string of ``size`` bytes, in the smallest form, as msgpack itself writes it."""
    for limit, type_byte, width in _BIN_HEADERS:
        if size < limit:
            return bytes([type_byte]) + size.to_bytes(width, "big")
    raise OutputError(f"{size:,} bytes do not fit in one msgpack binary string (at most {MAX_BIN_BYTES:,})")


def ext_header(code: int, size: int) -> bytes:
    """The header of an extension object of ``size`` payload bytes, in the smallest form msgpack allows."""
    if size in _FIXEXT:
        return bytes([_FIXEXT[size], code])
    for limit, type_byte, width in _EXT_HEADERS:
        if size < limit:
            return bytes([type_byte]) + size.to_bytes(width, "big") + bytes([code])
    raise OutputError(f"{size:,} bytes do not fit in one msgpack extension object")


class Stream:
    """A msgpack document written piece by piece: small values through msgpack, array bytes directly."""

    def __init__(self, handle: BinaryIO, msgpack: Any, progress: Progress | None = None) -> None:
        self.handle = handle
        self.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self.progress = progress
        self.filled = 0

    def raw(self, data: bytes | memoryview) -> None:
        self.handle.write(data)

    def value(self, value: Any, what: str = "a value", layer: str | None = None) -> None:
        try:
            self.raw(self.packer.pack(value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ModelStructureError(f"{what} cannot be stored in msgpack: {exc}", layer=layer) from None

    def map(self, size: int) -> None:
        self.raw(self.packer.pack_map_header(size))

    def array_header(self, size: int) -> None:
        self.raw(self.packer.pack_array_header(size))

    def reserve(self, size: int) -> int:
        """Leave ``size`` bytes for array data at the current position (filled by `fill`); returns it."""
        self.handle.flush()
        position = self.handle.tell()
        self.handle.seek(position + size)
        return position

    def fill(self, blob: Blob, dtype: np.dtype[Any], segments: list[tuple[int, int]]) -> None:
        """Write the blob's C-order values as ``dtype`` into reserved space.

        ``segments`` are (file position, element count) pairs that take the
        elements in order (one segment, or Flax's chunks with headers between
        them). Blocks come from `caffeport.streaming.blocks.iter_placed` in the order
        that reads the source best, which for a transposed view is not the
        output order, and are written where they belong by `stream_placed`.
        """
        self.handle.flush()
        firsts = list(itertools.accumulate((count for _, count in segments), initial=0))

        tag = self.filled
        self.filled += 1

        def placed() -> Iterator[tuple[int, np.ndarray, int]]:
            for offset, run in iter_placed(blob, CHUNK_BYTES, dtype, release_source=True):
                segment = bisect.bisect_right(firsts, offset) - 1
                while run.size:
                    position, count = segments[segment]
                    take = min(run.size, firsts[segment] + count - offset)
                    yield position + (offset - firsts[segment]) * dtype.itemsize, run[:take], tag
                    run, offset, segment = run[take:], offset + take, segment + 1

        stream_placed(self.handle.fileno(), placed(), None if self.progress is None else self.progress.on_batch)
