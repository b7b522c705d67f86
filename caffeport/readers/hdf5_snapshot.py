"""Read Caffe's HDF5 weight snapshots (``snapshot_format: HDF5``, ``*.caffemodel.h5``).

Caffe writes ``/data/<layer name>/<blob index>`` datasets (and the gradients
under ``/diff``, which we ignore). The file carries no layer types, tops or
order beyond the names, so a prototxt is what makes it a full net; without one
the layers come out with an empty type, sorted by name as HDF5 lists them.

Contiguous, uncompressed datasets are returned as read-only views onto a
memory map of the file, like the binary reader's blobs.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from caffeport.errors import DecodeError, InputFileError
from caffeport.ir import Layer, Net
from caffeport.readers.files import map_file


def read_hdf5_snapshot(path: str | os.PathLike[str]) -> Net:
    buf = map_file(path)
    net = Net(caffemodel_path=os.fspath(path), format="HDF5")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputFileError(f"cannot open as HDF5: {exc}", path=path) from None
    with handle:
        data = handle.get("data")
        if not isinstance(data, h5py.Group):
            raise InputFileError("HDF5 file has no /data group: it is not a Caffe weight snapshot", path=path)
        for name, group in data.items():
            if not isinstance(group, h5py.Group):
                raise DecodeError(f"/data/{name} is not a group of blobs", path=path, layer=name)
            keys = sorted(group.keys(), key=_blob_index(path, name))
            blobs = [_dataset_array(group[k], buf, path, name) for k in keys]
            net.layers.append(Layer(name=name, type="", blobs=blobs))
    net.warnings.append("an HDF5 snapshot holds no layer types or connections: pass the prototxt for those")
    return net


def _blob_index(path: str | os.PathLike[str], layer: str):
    def key(name: str) -> int:
        if not name.isdigit():
            raise DecodeError(f"blob dataset {name!r} is not named by its index", path=path, layer=layer)
        return int(name)

    return key


def _dataset_array(dataset: object, buf: memoryview | object, path: str | os.PathLike[str], layer: str) -> np.ndarray:
    if not isinstance(dataset, h5py.Dataset):
        raise DecodeError("blob entry is not a dataset", path=path, layer=layer)
    dtype = dataset.dtype
    if dtype.kind != "f":
        raise DecodeError(f"blob {dataset.name} has dtype {dtype}, expected floating point", path=path, layer=layer)
    offset = dataset.id.get_offset()
    if offset is not None and dataset.chunks is None and dataset.compression is None:
        count = int(np.prod(dataset.shape, dtype=np.int64))
        return np.frombuffer(buf, dtype=dtype, count=count, offset=offset).reshape(dataset.shape)
    return np.asarray(dataset[()])
