"""How a weights format stores a blob: its name, the dtype it is written in, and the chunks it is converted in.

Names (`blob_names`): every format that keys blobs by name uses the layer's
weight names (what the layout pass called them for the target framework),
and a blob past those names, or of a layer no pass named, goes under its
index (``"0"``, ``"1"``, ...): a blob is never left out for want of a name.

One rule for every format that writes arrays (npz, safetensors, flax and ir's
msgpack): a blob keeps its dtype where no backend converted its layer (with
the default backend ``caffe`` an NVIDIA Caffe fp16 blob stays float16 and a
``double_data`` blob float64, so the file holds the model's exact contents);
in a layer a backend converted for a framework (it has a ``framework_class``),
floating blobs are written in at least float32, the precision frameworks load
(fp16 widens exactly), so that one layer never mixes fp16 kernels with the
float32 statistics the BatchNorm passes compute. Bytes are little-endian; only
plain numbers (bool, ints, floats, complex) are stored. A format that holds
fewer dtypes (safetensors) checks the result against its own table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffeport.errors import ModelStructureError
from caffeport.ir import Layer
from caffeport.ir.file import BLOB_KINDS
from caffeport.streaming.blocks import BLOCK_BYTES, Blob

#: the most bytes a format converts and writes at once (`caffeport.streaming.blocks.iter_placed` / ``iter_chunks``)
CHUNK_BYTES = BLOCK_BYTES


def little_endian(dtype: np.dtype[Any], what: str, layer: str) -> np.dtype[Any]:
    """``dtype`` little-endian; refused unless a plain number (`caffeport.ir.file.BLOB_KINDS`, no fields)."""
    if dtype.kind not in BLOB_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise ModelStructureError(f"{what} has dtype {dtype}, which is not a plain numeric type", layer=layer)
    return dtype.newbyteorder("<") if dtype.byteorder == ">" else dtype


def written_dtype(layer: Layer, blob: Blob, what: str | None = None) -> np.dtype[Any]:
    """The little-endian dtype ``blob`` of ``layer`` is written in (the module docstring's rule).

    ``what`` names the blob in the error for a dtype that is not a plain number (default: the layer's blob).
    """
    dtype = np.dtype(blob.dtype)
    if layer.framework_class and dtype.kind == "f":
        dtype = np.promote_types(dtype, np.float32)
    return little_endian(dtype, what or "a blob", layer.name)


def blob_names(layer: Layer) -> list[str]:
    """One name per blob of ``layer``, in blob order: its weight names, then the index of each blob past them."""
    names = list(layer.weight_names[: len(layer.blobs)])
    return names + [str(i) for i in range(len(names), len(layer.blobs))]


__all__ = ["CHUNK_BYTES", "blob_names", "little_endian", "written_dtype"]
