"""Where a weight array's bytes live: the model's memory map, the file behind it, the byte range it spans.

Readers hand out numpy views onto a read-only memory map of the model file.
Streaming code needs three things about such a view: releasing its pages from
this process once used (they stay in the OS page cache, so peak RSS does not
grow with the model), the byte range it covers, and the file and offset it
came from, so a strided gather can ``pread`` exactly the bytes it needs
instead of touching the map (see `caffeport.tiled_transpose`).
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

_PAGE = mmap.PAGESIZE


def mapping_of(array: np.ndarray) -> mmap.mmap | None:
    """The memory map ``array`` is a view onto, if it is one."""
    obj: Any = array
    for _ in range(64):
        if isinstance(obj, mmap.mmap):
            return obj
        if isinstance(obj, np.ndarray):
            obj = obj.base
        elif isinstance(obj, memoryview):
            obj = obj.obj
        else:
            return None
    return None


def map_address(mapped: mmap.mmap) -> int:
    """The address of a (non-empty) map's first byte."""
    return int(np.frombuffer(mapped, dtype=np.uint8, count=1).__array_interface__["data"][0])


def byte_extent(array: np.ndarray) -> tuple[int, int]:
    """The lowest and one-past-highest byte addresses an array view touches."""
    address = array.__array_interface__["data"][0]
    low = high = address
    for dim, stride in zip(array.shape, array.strides):
        if dim == 0:
            return address, address
        span = (dim - 1) * stride
        if span < 0:
            low += span
        else:
            high += span
    return low, high + array.itemsize


def release_pages(array: np.ndarray) -> None:
    """Drop the pages under ``array`` from this process's memory map (no-op for in-memory arrays).

    MADV_DONTNEED on a read-only file map loses nothing: the pages stay in the
    OS page cache, and touching them again is a cheap minor fault.
    """
    owner = mapping_of(array)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if owner is None or advice is None or len(owner) == 0 or array.size == 0:
        return
    start_address = map_address(owner)
    low, high = byte_extent(array)
    first = max(0, (low - start_address) // _PAGE * _PAGE)
    last = min(len(owner), high - start_address)
    if last > first:
        owner.madvise(advice, first, last - first)


def open_source(array: np.ndarray) -> tuple[int, int] | None:
    """``(file descriptor, file offset of the array's lowest byte)`` for a view onto a mapped model file.

    None when the array is not a view onto a file this package mapped (an
    in-memory array, a decoded fp16 blob) or the file cannot be opened again.
    The caller closes the descriptor.
    """
    from caffeport.readers.files import mapped_path

    owner = mapping_of(array)
    path = mapped_path(owner) if owner is not None else None
    if owner is None or path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    return fd, byte_extent(array)[0] - map_address(owner)


def pread_exact(fd: int, buffer: memoryview, offset: int) -> None:
    """Fill ``buffer`` from byte ``offset`` of ``fd`` (a pread may return less than asked)."""
    while buffer:
        got = os.preadv(fd, [buffer], offset)
        if got <= 0:
            raise OSError("the model file ended while reading a weight block")
        buffer, offset = buffer[got:], offset + got

