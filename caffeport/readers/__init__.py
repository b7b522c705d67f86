"""Readers: Caffe files in, `Net` out.

`read` takes a caffemodel (binary V2/V1/V0 or HDF5 snapshot), a prototxt, or
both, and decides which reader applies by looking at the bytes rather than
trusting the file name. `read_blob` reads a ``.binaryproto`` (mean files).

Model files come from the internet. Every reader checks lengths, counts and
shapes itself and raises a `CaffeportError` subclass naming the file (and the
layer and byte offset, or line and column); as a last line of defence the two
entry points turn a stray ``ValueError``, ``OverflowError``, ``struct.error``,
``UnicodeDecodeError``, ``KeyError`` or ``IndexError`` into an
`InternalDecodeError` naming the file, so a check that was missed still gives
the user one clean line (and is a bug to report).
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
from collections.abc import Callable, Iterator

import numpy as np

from caffeport.codec.wire import Reader
from caffeport.errors import CaffeportError, InputFileError, InternalDecodeError, option_error
from caffeport.ir import Net
from caffeport.layers.shapes import infer_shapes
from caffeport.readers.blob_proto import decode_blob, nonfinite_counts
from caffeport.readers.caffemodel import read_caffemodel
from caffeport.readers.files import check_not_foreign, map_file, sniff, sniff_file
from caffeport.readers.merge import merge
from caffeport.readers.prototxt import read_prototxt

PathLike = str | os.PathLike[str]


def read_hdf5_snapshot(path: PathLike) -> Net:
    """`caffeport.readers.hdf5_snapshot.read_hdf5_snapshot`, imported when a file is one: h5py's import costs
    every other conversion about 25 ms of start-up (and a ``uname -p`` child, through ``platform``)."""
    from caffeport.readers import hdf5_snapshot

    return hdf5_snapshot.read_hdf5_snapshot(path)


#: weights readers by sniffed file kind
WEIGHTS_READERS: dict[str, Callable[[PathLike], Net]] = {
    "binary": read_caffemodel,
    "hdf5": read_hdf5_snapshot,
}

#: said of an HDF5 snapshot read without a prototxt (and only then: with one, the prototxt gave the structure)
HDF5_NEEDS_PROTOTXT = "an HDF5 snapshot holds no layer types or connections: pass the prototxt for those"

#: what a decoding bug on malformed input raises (UnicodeDecodeError is a ValueError)
_UNCHECKED = (ValueError, OverflowError, struct.error, KeyError, IndexError)


@contextlib.contextmanager
def _guard(path: PathLike | None) -> Iterator[None]:
    """Turn an exception a reader should have prevented into one clean error naming the file."""
    try:
        yield
    except _UNCHECKED as exc:
        raise InternalDecodeError(
            f"malformed input that caffeport failed to check ({type(exc).__name__}: {exc}); please report this"
            " file as a caffeport bug",
            path=path,
        ) from exc


def read(caffemodel: PathLike | None = None, prototxt: PathLike | None = None, *, phase: str = "TEST",
         check_values: bool = True) -> Net:
    """Read a Caffe model into a `Net`.

    - ``caffemodel`` alone: names, types, parameters and blobs all come from
      the weights file (an HDF5 snapshot has no types: give the prototxt).
    - ``prototxt`` alone: the structure without blobs.
    - both: the prototxt decides the layers (filtered for ``phase``), blobs are
      matched by layer name and ``net.match`` reports what did not match.

    Shapes are inferred where the inputs are known (``layer.top_shapes``).
    Blobs holding NaN or infinite values are kept as they are and named in
    ``net.warnings``; ``check_values=False`` leaves that pass over every
    weight to the caller (`nonfinite_warnings`; `convert` runs it beside
    the export).
    """
    if caffemodel is None and prototxt is None:
        raise CaffeportError("nothing to read: give a caffemodel, a prototxt, or both")
    weights = None
    if caffemodel is not None:
        with _guard(caffemodel):
            weights = _read_weights(caffemodel)
            if check_values:
                weights.warnings.extend(nonfinite_warnings(weights))
            if weights.source_format == "HDF5" and prototxt is None:
                weights.warnings.append(HDF5_NEEDS_PROTOTXT)
    if prototxt is not None:
        with _guard(prototxt):
            if sniff_file(prototxt) != "text":
                raise InputFileError(
                    "this is a binary file (a .caffemodel?), not a text prototxt", path=prototxt
                )
            structure = read_prototxt(prototxt, phase=phase)
        with _guard(prototxt if weights is None else caffemodel):
            net = merge(structure, weights) if weights is not None else structure
    else:
        assert weights is not None
        net = weights
    with _guard(prototxt if prototxt is not None else caffemodel):
        return infer_shapes(net)


def _read_weights(path: PathLike) -> Net:
    kind = sniff_file(path)
    if kind == "text":
        raise option_error(InputFileError, "this is a text file (a .prototxt?), not a .caffemodel: pass it as the "
                           "prototxt, {prototxt=}PATH", path=path)
    return WEIGHTS_READERS[kind](path)


def nonfinite_warnings(net: Net, *, threads: int = 2, stop: threading.Event | None = None) -> list[str]:
    """A warning naming each blob that holds NaN or infinite values (they are kept: Caffe would use them).

    ``stop`` ends the scan early (see `nonfinite_counts`); the list is then incomplete.
    """
    blobs = [(layer, index, blob) for layer in net.layers for index, blob in enumerate(layer.blobs)]
    warnings = []
    counts = nonfinite_counts([b for _, _, b in blobs], threads=threads, stop=stop)
    for (layer, index, blob), (nan, inf) in zip(blobs, counts):
        if nan or inf:
            counts = " and ".join(f"{n:,} {what}" for n, what in ((nan, "NaN"), (inf, "infinite")) if n)
            warnings.append(f"layer {layer.name!r} blob {index} {tuple(blob.shape)} holds {counts} values "
                            "(kept as stored)")
    return warnings


def read_blob(path: PathLike) -> np.ndarray:
    """The array stored in a ``.binaryproto`` (a single BlobProto, e.g. a mean image (1, C, H, W), BGR)."""
    with _guard(path):
        buf = map_file(path)
        check_not_foreign(buf[:512], path)
        kind = sniff(buf[:512])
        if kind != "binary":
            raise InputFileError(f"this is a {kind} file, not a binary .binaryproto blob", path=path)
        reader = Reader(buf, path=os.fspath(path))
        blob = decode_blob(reader, 0, len(buf), standalone=True)
        if blob.size == 0:
            raise reader.error(f"the blob holds no values (shape {tuple(blob.shape)})", 0)
        return blob


__all__ = ["WEIGHTS_READERS", "nonfinite_warnings", "read", "read_blob"]
