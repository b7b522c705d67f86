"""Opening input files: one place that checks them and says clearly what is wrong.

Model files come from the internet and from users' typos, so before any
decoding we check that the path exists, is a regular readable file and is not
empty, and we sniff what it really is: a caffemodel and a prototxt are easy to
swap on the command line, and an HDF5 snapshot is a different reader.
"""

from __future__ import annotations

import mmap
import os
import stat
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from caffeport.errors import InputFileError

Kind = Literal["hdf5", "text", "binary"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TEXT_BYTES = frozenset(b"\t\n\r\f\v" + bytes(range(0x20, 0x7F)))


def check_file(path: str | os.PathLike[str]) -> Path:
    """The path as a `Path` once it is known to be a readable, non-empty regular file."""
    p = Path(path)
    try:
        info = p.stat()
    except FileNotFoundError:
        raise InputFileError("no such file", path=p) from None
    except (OSError, ValueError) as exc:  # a loop of links, a name too long, a NUL character in the path ...
        raise InputFileError(f"cannot open: {getattr(exc, 'strerror', None) or exc}", path=p) from None
    if stat.S_ISDIR(info.st_mode):
        raise InputFileError("is a directory, expected a file", path=p)
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError("is not a regular file", path=p)
    if not os.access(p, os.R_OK):
        raise InputFileError("permission denied: the file is not readable", path=p)
    if info.st_size == 0:
        raise InputFileError("the file is empty", path=p)
    return p


def map_file(path: str | os.PathLike[str]) -> mmap.mmap:
    """A read-only memory map of the whole file.

    Blob arrays are views onto this map, so the weights are never copied into
    Python memory and pages the OS no longer needs can be dropped. A
    descriptor of the same open file is kept beside the map (`mapped_file`)
    for block copies that read with pread rather than touch the map: never
    the path opened again, which could by then name another file.
    """
    p = check_file(path)
    try:
        with open(p, "rb") as handle:
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            fd = os.dup(handle.fileno())
    except ValueError:  # emptied since check_file looked at it
        raise InputFileError("the file is empty", path=p) from None
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}", path=p) from None
    weakref.finalize(mapped, os.close, fd)
    _MAPPED[mapped] = MappedFile(str(p), fd)
    return mapped


@dataclass(frozen=True)
class MappedFile:
    """The file behind a map made by `map_file`: its path (for messages) and a descriptor open on it."""

    path: str
    fd: int


_MAPPED: weakref.WeakKeyDictionary[mmap.mmap, MappedFile] = weakref.WeakKeyDictionary()


def mapped_file(mapped: mmap.mmap) -> MappedFile | None:
    """The file a map made by `map_file` reads (its descriptor lives as long as the map), or None for any other map."""
    return _MAPPED.get(mapped)


def sniff(head: bytes) -> Kind:
    """Guess what a file is from its first bytes.

    HDF5 has a signature. A prototxt is printable text; a binary NetParameter
    or BlobProto starts with a protobuf tag and almost always holds bytes
    outside printable ASCII within its first few hundred bytes.
    """
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    sample = head[:512]
    if sample.startswith(b"\xef\xbb\xbf"):
        sample = sample[3:]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(sample) - 4:  # a multi-byte character cut at the end of the sample is still text
            return "binary"
    if all(byte in _TEXT_BYTES or byte >= 0x80 for byte in sample):
        return "text"
    return "binary"


def sniff_file(path: str | os.PathLike[str]) -> Kind:
    p = check_file(path)
    try:
        with open(p, "rb") as handle:
            return sniff(handle.read(512))
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}", path=p) from None
