"""NumPy ``.npz``: one array per blob, for tools that want the weights and nothing else.

Layout (what ``numpy.load(path)`` shows):

- ``<layer>/<weight name>`` for every blob of a layer the backend named
  (``conv1/kernel`` with backend tensorflow, ``conv1/weight`` with torch);
  ``<layer>/<index>`` where it gave no names (``conv1/0``, ``conv1/1`` with
  the default backend ``caffe``, whose blobs are Caffe's own, untouched);
- ``__caffeport__``: a 0-d unicode array holding the JSON of
  `conversion_metadata` (source files, backend, BatchNorm eps values, name
  map, fused layers, target layer classes).

Every blob is written in the dtype `caffeport.exporters.stored.written_dtype`
gives: its own where no backend converted its layer (fp16 and float64 kept),
at least float32 in a converted layer; little-endian.

The file is what ``numpy.savez`` writes (stored, not deflated, ZIP64 entries
so that blobs over 4 GiB work), but each array is streamed into its zip entry
block by block (`caffeport.streaming.blocks.iter_chunks`) straight from the transform's
view of the caffemodel's memory map, whose pages are released once written:
a multi-GB model never needs a second copy in memory. A transposed kernel is
stored in .npy's Fortran order, its source's own order (``numpy.load`` gives
the same array either way). Other strided views are read in output order:
the flatten-reordered Dense kernel of a keras-layout backend then has its
whole source layer mapped while it is written (page cache, released after);
the seekable formats (safetensors, flax, ir) place blocks instead. Every entry gets the
same fixed timestamp, so converting the same model twice gives the same bytes.
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.exporters.registry import (
    ExportOptions,
    conversion_metadata,
    file_safe_names,
    refuse_same_name,
    register_exporter,
    shown_name,
)
from caffeport.exporters.stored import CHUNK_BYTES, blob_names, written_dtype
from caffeport.ir import Layer, Net
from caffeport.streaming.blocks import Blob, Progress, iter_chunks

#: the key of the conversion metadata; no blob key can take it (blob keys contain a '/')
METADATA_KEY = "__caffeport__"
#: the zip format keeps a member's name length in 16 bits (local header and central directory)
MAX_MEMBER_NAME_BYTES = 0xFFFF
#: the oldest date a zip entry can hold: a fixed date makes the output reproducible
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def check_member_name(key: str, layer_name: str, alternative: str) -> None:
    """Refuse an npz key whose member name ``<key>.npy`` a zip archive cannot hold (`MAX_MEMBER_NAME_BYTES`).

    ``numpy.savez`` would fail half-way with a ``struct.error``; ``alternative``
    says what the user can do instead (after "rename the layer, ").
    """
    size = len(f"{key}.npy".encode("utf-8", "surrogateescape"))
    if size > MAX_MEMBER_NAME_BYTES:
        raise ModelStructureError(
            f"the npz entry of layer {shown_name(layer_name)} would have a name of {size:,} bytes, and a zip "
            f"archive holds names of at most {MAX_MEMBER_NAME_BYTES:,}: rename the layer, {alternative}")


def _blob_keys(net: Net) -> list[tuple[str, Blob, np.dtype[Any]]]:
    """(key, blob, dtype written) for every blob of every layer, in net order; refuses two blobs with one key."""
    entries: list[tuple[str, Blob, np.dtype[Any]]] = []
    owners: dict[str, Layer] = {}
    safe = file_safe_names(net)
    for layer in net.layers:
        for name, blob in zip(blob_names(layer), layer.blobs):
            key = f"{safe[layer.name]}/{name}"
            if key in owners:
                raise refuse_same_name(owners[key], layer, f"the npz entry {shown_name(key)}")
            check_member_name(key, layer.name, "or write another format (keras-h5, safetensors, flax and ir take "
                              "such names)")
            owners[key] = layer
            entries.append((key, blob, written_dtype(layer, blob, repr(key))))
    return entries


def _member(archive: zipfile.ZipFile, key: str) -> IO[bytes]:
    """A new stored member ``<key>.npy``; ZIP64 because its size is not known before it is written."""
    info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.external_attr = 0o644 << 16  # -rw-r--r-- for unzip, instead of no permissions at all
    return archive.open(info, "w", force_zip64=True)


def _fortran_source(blob: Blob) -> np.ndarray | None:
    """``blob.T`` when ``blob`` is a transposed view (Fortran-contiguous), else None.

    A zip member is written front to back, so values go in file order, and
    .npy offers two: C and Fortran. A transposed kernel (Keras' dense
    kernels) read in C order would touch its whole source for every block; in
    Fortran order it is its source's own order, read once, without a copy.
    """
    if isinstance(blob, np.ndarray) and blob.ndim > 1 and blob.flags.f_contiguous and not blob.flags.c_contiguous:
        return blob.T
    return None


def _blob_entry(archive: zipfile.ZipFile, key: str, blob: Blob, dtype: np.dtype[Any]) -> None:
    """The .npy header ``numpy.save`` would write, then the blob's values block by block."""
    fortran = _fortran_source(blob)
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": fortran is not None,
              "shape": tuple(int(d) for d in blob.shape)}
    with _member(archive, key) as member:
        np.lib.format.write_array_header_1_0(member, header)
        source = blob if fortran is None else fortran
        for chunk in iter_chunks(source, CHUNK_BYTES, dtype, release_source=True):
            member.write(np.ascontiguousarray(chunk).data.cast("B"))


@register_exporter("npz", suffix=".npz", default_backend="caffe",
                   description="NumPy .npz: one array per blob ('<layer>/<weight name>'), dtypes kept, metadata JSON")
def write_npz(net: Net, path: Path, options: ExportOptions) -> None:
    """Write every blob of ``net`` to ``path``; layers without blobs have nothing to store, whatever ``options``."""
    entries = _blob_keys(net)
    metadata = np.array(json.dumps(conversion_metadata(net), sort_keys=True), dtype=np.str_)
    sizes = [math.prod(blob.shape) * dtype.itemsize for _, blob, dtype in entries]
    progress = Progress(options.progress, sum(sizes), len(entries))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for index, ((key, blob, dtype), size) in enumerate(zip(entries, sizes, strict=True)):
            _blob_entry(archive, key, blob, dtype)
            progress.wrote(size, index)
        with _member(archive, METADATA_KEY) as member:
            np.lib.format.write_array(member, metadata, allow_pickle=False)
