"""Where a weight array's bytes live: the model's memory map, the file behind it, the byte range it spans.

Readers hand out numpy views onto a read-only memory map of the model file.
Streaming code needs three things about such a view: releasing its pages from
this process once used (they stay in the OS page cache, so peak RSS does not
grow with the model), the byte range it covers, and the file and offset it
came from, so a strided gather can ``pread`` exactly the bytes it needs
instead of touching the map (see `caffeport.streaming.tiled_transpose`), and a writer
can have the kernel copy a view's bytes into the output (`SourceFile.copy_to`)
instead of writing them from the map.
"""

from __future__ import annotations

import errno
import mmap
import os
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from caffeport.errors import InputFileError

_PAGE = mmap.PAGESIZE
#: views spanning more than this of a model map are gathered with pread rather than read through the map
PREAD_ABOVE = 16 << 20
#: what ``copy_file_range`` says when the kernel cannot copy between the two files (another file system on
#: Linux 5.19+, an old kernel, a file system without it): the caller writes the bytes itself
_NO_KERNEL_COPY = frozenset(getattr(errno, name) for name in ("EXDEV", "ENOSYS", "EOPNOTSUPP", "EINVAL", "EBADF")
                            if hasattr(errno, name))


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
    """Drop the pages under ``array`` from this process, if it is a view onto a model map (else nothing).

    MADV_DONTNEED on a read-only file map loses nothing: the pages stay in the
    OS page cache, and touching them again is a cheap minor fault. Only maps
    made by `caffeport.readers.files.map_file` are released: on someone
    else's map (a copy-on-write ``np.memmap``, say) it could throw away
    values held only in memory.
    """
    owner = mapping_of(array)
    advice = getattr(mmap, "MADV_DONTNEED", None)
    if owner is None or advice is None or array.size == 0 or mapped_file(owner) is None:
        return
    start_address = map_address(owner)
    low, high = byte_extent(array)
    first = max(0, (low - start_address) // _PAGE * _PAGE)
    last = min(len(owner), high - start_address)
    if last > first:
        owner.madvise(advice, first, last - first)


@dataclass(frozen=True)
class SourceFile:
    """Where a view onto a model map comes from: the file (a descriptor open on it) and the view's offset."""

    fd: int
    path: str
    offset: int

    def read_into(self, buffer: memoryview, position: int) -> None:
        """Fill ``buffer`` from byte ``position`` of the file (a pread may return less than asked).

        A file that shrank, or a read that fails, while its weights are being
        converted is an `InputFileError` naming it, not a stray OSError.
        """
        while buffer:
            try:
                got = os.preadv(self.fd, [buffer], position)
            except OSError as exc:
                raise InputFileError(f"reading weights at byte {position:,} failed: {exc.strerror or exc}",
                                     path=self.path) from None
            if got <= 0:
                raise InputFileError(f"the file ended at byte {position:,} while its weights were being "
                                     "converted (was it changed meanwhile?)", path=self.path)
            buffer, position = buffer[got:], position + got

    def copy_to(self, fd: int, count: int, position: int) -> bool:
        """Copy ``count`` bytes from the view's offset to byte ``position`` of ``fd`` inside the kernel.

        ``copy_file_range`` moves the bytes from the page cache of the model
        to that of the output: no page of the map is touched and nothing
        passes through this process (a write from the map faults every page
        in, then copies it). False when the kernel cannot copy between these
        two files (`_NO_KERNEL_COPY`, or no ``os.copy_file_range``): nothing
        was written and the caller writes the bytes itself. A model that ends
        early is an `InputFileError`, as in `read_into`; a refused write (the
        disk full) the OSError a write would raise.
        """
        if not hasattr(os, "copy_file_range"):
            return False
        done = 0
        while done < count:
            try:
                got = os.copy_file_range(self.fd, fd, count - done, self.offset + done, position + done)
            except OSError as exc:
                if done == 0 and exc.errno in _NO_KERNEL_COPY:
                    return False
                raise
            if got <= 0:
                if done == 0 and os.fstat(self.fd).st_size >= self.offset + count:
                    return False  # a kernel or file system that copies nothing between these files (as EXDEV)
                raise InputFileError(f"the file ended at byte {self.offset + done:,} while its weights were being "
                                     "converted (was it changed meanwhile?)", path=self.path)
            done += got
        return True


def pread_source(array: np.ndarray, above: int | None = None) -> SourceFile | None:
    """The model file to read a view from with pread, or None to read the view through the map (or memory).

    Only views onto a map made by `map_file` that span more than ``above``
    bytes (`PREAD_ABOVE`) are read with pread: touching a large strided view
    through the map would map whole page-cache folios, and with them far
    more than is read. The descriptor belongs to the map and lives as long
    as it (and so as long as the view): callers do not close it.
    """
    owner = mapping_of(array)
    found = mapped_file(owner) if owner is not None else None
    low, high = byte_extent(array)
    if owner is None or found is None or high - low <= (PREAD_ABOVE if above is None else above):
        return None
    return SourceFile(found.fd, found.path, low - map_address(owner))


@dataclass(frozen=True)
class MappedFile:
    """The file behind a map made by `caffeport.readers.files.map_file`: its path (for messages) and a descriptor."""

    path: str
    fd: int


_MAPPED: weakref.WeakKeyDictionary[mmap.mmap, MappedFile] = weakref.WeakKeyDictionary()


def remember_map(mapped: mmap.mmap, path: str, fd: int) -> None:
    """Record that ``mapped`` maps the file ``path``, open as ``fd``; the descriptor is closed with the map.

    `caffeport.readers.files.map_file` calls this for every map it makes. The
    record lives here, beside the code that reads it (`release_pages`,
    `pread_source`), so that this file-access module never imports a reader:
    the readers sit above it and use it (see the layers in `caffeport`).
    """
    weakref.finalize(mapped, os.close, fd)
    _MAPPED[mapped] = MappedFile(path, fd)


def mapped_file(mapped: mmap.mmap) -> MappedFile | None:
    """The file a map made by `caffeport.readers.files.map_file` reads (open as long as the map lives), or None."""
    return _MAPPED.get(mapped)
