"""Opening input files: one place that checks them and says clearly what is wrong.

Model files come from the internet and from users' typos, so before any
decoding we check that the path exists, is a regular readable file and is not
empty, and we sniff what it really is: a caffemodel and a prototxt are easy to
swap on the command line, and an HDF5 snapshot is a different reader.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from caffeport.errors import CaffeportError, InputFileError
from caffeport.io.mapped import remember_map

if TYPE_CHECKING:
    from caffeport.ir import Net

Kind = Literal["hdf5", "text", "binary"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TEXT_BYTES = frozenset(b"\t\n\r\f\v" + bytes(range(0x20, 0x7F)))


def model_file(net: Net) -> str | None:
    """The file a problem with ``net``'s layers is reported against: its prototxt (it decides them), else weights."""
    return net.prototxt_path or net.caffemodel_path


@contextlib.contextmanager
def naming_file(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Make a `CaffeportError` raised inside that names no file name ``path``.

    A layer's shape rule, forward or weight layout knows the layer it fails on,
    not the file that layer came from; the one line the CLI prints must say
    both, so the code that knows the file (`caffeport.run`, the transforms, the
    exporters) wraps the work in this.
    """
    try:
        yield
    except CaffeportError as exc:
        if exc.path is None and path is not None:
            exc.path = os.fspath(path)
            exc.args = (exc._format(),)  # str(exc) is args[0]: formatted again with the file
        raise


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
    descriptor of the same open file is kept beside the map (`caffeport.io.mapped.mapped_file`)
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
    remember_map(mapped, str(p), fd)
    return mapped


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
    """What the file at ``path`` is (`sniff`), once it is known not to be a broken download (`check_not_foreign`)."""
    p = check_file(path)
    try:
        with open(p, "rb") as handle:
            head = handle.read(512)
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}", path=p) from None
    check_not_foreign(head, p)
    return sniff(head)


_LFS_POINTER = b"version https://git-lfs.github.com/spec/"
_LFS_SIZE = re.compile(rb"\nsize ([0-9]{1,20})\n")
#: (magic bytes at offset 0, what the file is and what to do)
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed: decompress it first (gunzip FILE, or tar -xzf FILE for a .tar.gz)"),
    (b"PK\x03\x04", "a zip archive: extract the file from it first (unzip FILE)"),
    (b"PK\x05\x06", "an empty zip archive, not a model file"),
    (b"BZh", "bzip2-compressed: decompress it first (bunzip2 FILE)"),
    (b"\xfd7zXZ\x00", "xz-compressed: decompress it first (unxz FILE)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive: extract the file from it first (7z x FILE)"),
    (b"\xff\xfe\x00\x00", "UTF-32 text: save it as UTF-8"),
    (b"\xff\xfe", "UTF-16 text: save it as UTF-8"),
    (b"\xfe\xff", "UTF-16 text: save it as UTF-8"),
)


def foreign_format(head: bytes) -> str | None:
    """What a file that is no Caffe file at all, but a usual broken download, is and what to do; or None.

    Users get model files from git hosts and web pages, so the files that arrive in place of a
    model are a Git LFS pointer (a clone without ``git lfs``), a saved HTML page (a "download"
    link that led to a page), an archive or compressed file, or a prototxt re-saved as UTF-16
    by a Windows editor. Each is recognised from its first bytes (``head``, at least the first
    512 where the file has them), none of which a caffemodel, prototxt or binaryproto can start
    with, so that the message says what the file is instead of a wire-format or syntax error.
    """
    if head.startswith(_LFS_POINTER):
        size = _LFS_SIZE.search(head)
        real = f" (the real file is {int(size[1]):,} bytes)" if size else ""
        return f"a Git LFS pointer, not the model{real}: fetch the real file with `git lfs pull`"
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<") and (b"<html" in text or b"<!doctype html" in text):  # no Caffe file starts with '<'
        return ("a saved HTML page (a web page or an error page), not a model file: download the file itself"
                " (on GitHub, the 'raw' or 'download' link)")
    for magic, what in _MAGIC:
        if head.startswith(magic) and (magic != b"BZh" or head[4:10] == b"1AY&SY"):
            return what
    if _is_tar_header(head):
        return "a tar archive: extract the file from it first (tar -xf FILE)"
    if _utf16_without_bom(head):
        return "UTF-16 text: save it as UTF-8"
    return None


def _is_tar_header(head: bytes) -> bool:
    """A POSIX or GNU tar header: ``ustar`` at byte 257 and a header checksum that adds up."""
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    try:
        stored = int(head[148:156].strip(b"\0 ") or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 8 * 32 + sum(head[156:512])


def _utf16_without_bom(head: bytes) -> bool:
    """Text saved as UTF-16 with no byte order mark: printable ASCII with a NUL after (or before) every byte."""
    sample = head[: len(head) // 2 * 2]
    if len(sample) < 8:
        return False
    for text, zeros in ((sample[0::2], sample[1::2]), (sample[1::2], sample[0::2])):
        if not any(zeros) and all(byte in _TEXT_BYTES for byte in text):
            return True
    return False


def check_not_foreign(head: bytes, path: str | os.PathLike[str]) -> None:
    """Refuse, with what it is and what to do, a file `foreign_format` recognises (``head``: its first bytes)."""
    what = foreign_format(head)
    if what is not None:
        raise InputFileError(f"this is {what}" if what.startswith(("a ", "an ")) else f"this file is {what}",
                             path=path)
