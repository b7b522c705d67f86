"""Readers: Caffe files in, `Net` out.

`read` takes a caffemodel (binary V2/V1/V0 or HDF5 snapshot), a prototxt, or
both, and decides which reader applies by looking at the bytes rather than
trusting the file name. `read_blob` reads a ``.binaryproto`` (mean files).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from caffeport.errors import CaffeportError, InputFileError
from caffeport.ir import Net
from caffeport.readers.blob_proto import decode_blob
from caffeport.readers.caffemodel import read_caffemodel
from caffeport.readers.files import map_file, sniff, sniff_file
from caffeport.readers.hdf5_snapshot import read_hdf5_snapshot
from caffeport.readers.merge import merge
from caffeport.readers.prototxt import read_prototxt
from caffeport.readers.wire import Reader
from caffeport.shapes import infer_shapes

PathLike = str | os.PathLike[str]

#: weights readers by sniffed file kind
WEIGHTS_READERS: dict[str, Callable[[PathLike], Net]] = {
    "binary": read_caffemodel,
    "hdf5": read_hdf5_snapshot,
}


def read(caffemodel: PathLike | None = None, prototxt: PathLike | None = None, *, phase: str = "TEST") -> Net:
    """Read a Caffe model into a `Net`.

    - ``caffemodel`` alone: names, types, parameters and blobs all come from
      the weights file (an HDF5 snapshot has no types: give the prototxt).
    - ``prototxt`` alone: the structure without blobs.
    - both: the prototxt decides the layers (filtered for ``phase``), blobs are
      matched by layer name and ``net.match`` reports what did not match.

    Shapes are inferred where the inputs are known (``layer.top_shapes``).
    """
    if caffemodel is None and prototxt is None:
        raise CaffeportError("nothing to read: give a caffemodel, a prototxt, or both")
    weights = _read_weights(caffemodel) if caffemodel is not None else None
    if prototxt is not None:
        if sniff_file(prototxt) != "text":
            raise InputFileError(
                "this is a binary file (a .caffemodel?), not a text prototxt", path=prototxt
            )
        structure = read_prototxt(prototxt, phase=phase)
        net = merge(structure, weights) if weights is not None else structure
    else:
        assert weights is not None
        net = weights
    return infer_shapes(net)


def _read_weights(path: PathLike) -> Net:
    kind = sniff_file(path)
    if kind == "text":
        raise InputFileError(
            "this is a text file (a .prototxt?), not a .caffemodel: pass it as the prototxt (-p)", path=path
        )
    return WEIGHTS_READERS[kind](path)


def read_blob(path: PathLike) -> np.ndarray:
    """The array stored in a ``.binaryproto`` (a single BlobProto, e.g. a mean image (1, C, H, W), BGR)."""
    buf = map_file(path)
    kind = sniff(buf[:512])
    if kind != "binary":
        raise InputFileError(f"this is a {kind} file, not a binary .binaryproto blob", path=path)
    reader = Reader(buf, path=os.fspath(path))
    return decode_blob(reader, 0, len(buf))


__all__ = ["WEIGHTS_READERS", "read", "read_blob"]
