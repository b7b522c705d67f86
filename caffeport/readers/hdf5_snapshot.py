"""Read Caffe's HDF5 weight snapshots (``snapshot_format: HDF5``, ``*.caffemodel.h5``).

Caffe writes ``/data/<layer name>/<blob index>`` datasets (and the gradients
under ``/diff``, which we ignore). The file carries no layer types, tops or
order beyond the names, so a prototxt is what makes it a full net; without one
the layers come out with an empty type, sorted by name as HDF5 lists them.

Contiguous, uncompressed datasets are returned as read-only views onto a
memory map of the file, like the binary reader's blobs, once their byte range
is checked against the file's size.

HDF5 files come from the internet like caffemodels, and HDF5 can do more than
Caffe ever asks of it, so this reader refuses what Caffe never writes and an
attacker could use: soft and external links and external or virtual storage
(they point at other files, which would be read into the weights), datasets
that declare far more values than they store (a few compressed or unallocated
bytes expanding to gigabytes), non-UTF-8 names. Whatever h5py raises for a
corrupt file (OSError, KeyError, ValueError, ...) becomes a `DecodeError`.
"""

from __future__ import annotations

import math
import mmap
import os
from dataclasses import dataclass

import h5py
import numpy as np

from caffeport.errors import DecodeError, InputFileError
from caffeport.ir import Layer, Net
from caffeport.readers.blob_proto import MAX_AXES
from caffeport.readers.files import map_file

#: what h5py raises on a corrupt or unsupported file (TypeError: a datatype with no numpy equivalent)
_H5PY_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)
#: HDF5 types that are exactly numpy's float16/32/64 (only these are read as raw bytes from the map)
_IEEE_FLOATS = tuple(getattr(h5py.h5t, f"IEEE_F{bits}{order}") for bits in (16, 32, 64) for order in ("LE", "BE")
                     if hasattr(h5py.h5t, f"IEEE_F{bits}{order}"))
#: a dataset not read from the map may hold at most this many times its stored bytes ...
_MAX_EXPANSION = 16
#: ... or this many bytes, whichever is more (fill values of a small unallocated dataset)
_SMALL_BYTES = 1 << 20
_MAX_ELEMENTS = 1 << 59


@dataclass
class _Where:
    """The file and layer being read, for error messages."""

    path: str
    layer: str | None = None

    def error(self, message: str, offset: int | None = None) -> DecodeError:
        return DecodeError(message, path=self.path, layer=self.layer, offset=offset)


def read_hdf5_snapshot(path: str | os.PathLike[str]) -> Net:
    buf = map_file(path)
    where = _Where(os.fspath(path))
    net = Net(caffemodel_path=where.path, source_format="HDF5")
    try:
        handle = h5py.File(where.path, "r")
    except _H5PY_ERRORS as exc:
        raise InputFileError(f"cannot open as HDF5: {exc}", path=where.path) from None
    try:
        with handle:
            _read_layers(handle, buf, where, net)
    except _H5PY_ERRORS as exc:
        raise where.error(f"corrupt HDF5 snapshot ({type(exc).__name__}: {exc})") from None
    return net


def _read_layers(handle: h5py.File, buf: mmap.mmap, where: _Where, net: Net) -> None:
    if not isinstance(handle.get("data", getlink=True), h5py.HardLink) or not isinstance(handle["data"], h5py.Group):
        raise InputFileError("HDF5 file has no /data group: it is not a Caffe weight snapshot", path=where.path)
    data = handle["data"]
    for name in data:
        where.layer = None
        name = _name(name, where, "layer")
        where.layer = name
        group = _member(data, name, where)
        if not isinstance(group, h5py.Group):
            raise where.error(f"/data/{name} is not a group of blobs")
        keys = sorted((_name(k, where, "blob") for k in group), key=_blob_index(where))
        blobs = [_dataset_array(_member(group, k, where), buf, where) for k in keys]
        net.layers.append(Layer(name=name, type="", blobs=blobs))
    where.layer = None


def _name(name: str | bytes, where: _Where, what: str) -> str:
    """An HDF5 link name as text (h5py hands over bytes when they are not UTF-8)."""
    if isinstance(name, str):
        return name
    raise where.error(f"a {what} name is not valid UTF-8 ({bytes(name)[:40]!r})")


def _member(group: h5py.Group, name: str, where: _Where) -> object:
    """``group[name]`` if it is a plain (hard) link: soft and external links can point at other files."""
    link = group.get(name, getlink=True)
    if not isinstance(link, h5py.HardLink):
        kind = type(link).__name__
        raise where.error(f"{group.name}/{name} is an HDF5 {kind}, which Caffe never writes: refused")
    return group[name]


def _blob_index(where: _Where):
    def key(name: str) -> int:
        if not (name.isascii() and name.isdigit() and len(name) <= 18):
            raise where.error(f"blob dataset {name!r} is not named by its index")
        return int(name)

    return key


def _dataset_array(dataset: object, buf: mmap.mmap, where: _Where) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise where.error("blob entry is not a dataset")
    dtype = dataset.dtype
    if dtype.kind != "f" or dtype.itemsize not in (2, 4, 8):
        raise where.error(f"blob {dataset.name} has dtype {dtype}, expected float16, float32 or float64")
    shape = dataset.shape
    if shape is None:
        raise where.error(f"blob {dataset.name} has no dataspace (a null dataset)")
    if len(shape) > MAX_AXES:
        raise where.error(f"blob {dataset.name} has {len(shape)} axes; Caffe allows at most {MAX_AXES}")
    count = math.prod(shape)
    if math.prod(d for d in shape if d) > _MAX_ELEMENTS:
        raise where.error(f"blob {dataset.name} has the astronomically large shape {shape}")
    if dataset.external or dataset.is_virtual:
        raise where.error(f"blob {dataset.name} keeps its values in other files (external or virtual storage):"
                          " refused")
    nbytes = count * dtype.itemsize
    offset = dataset.id.get_offset()
    contiguous = dataset.id.get_create_plist().get_layout() == h5py.h5d.CONTIGUOUS
    if contiguous and offset is not None and any(dataset.id.get_type().equal(t) for t in _IEEE_FLOATS):
        if offset + nbytes > len(buf):
            raise where.error(
                f"blob {dataset.name} claims {nbytes:,} bytes at byte offset {offset:,} but the file has only"
                f" {len(buf):,} (truncated or corrupt)", offset
            )
        return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(shape)
    stored = dataset.id.get_storage_size()
    if nbytes > max(_MAX_EXPANSION * stored, _SMALL_BYTES):
        raise where.error(
            f"blob {dataset.name} declares {nbytes:,} bytes of values but stores only {stored:,}: refused"
            " (Caffe writes uncompressed snapshots)"
        )
    if dataset.chunks is not None and math.prod(dataset.chunks) * dtype.itemsize > max(nbytes, _SMALL_BYTES):
        raise where.error(f"blob {dataset.name} has chunks {dataset.chunks} larger than the blob itself")
    return np.asarray(dataset[()])
