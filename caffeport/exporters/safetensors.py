"""safetensors: flat named tensors plus string metadata, loadable with no pickle and no custom code.

Tensor names. With the default backend ``torch`` they are PyTorch
``state_dict`` keys of a module that mirrors the prototxt with one submodule
per Caffe layer, named after the (sanitised) layer, so that
``model.load_state_dict(safetensors.torch.load_file(path), strict=True)`` works:

- Convolution/Deconvolution/InnerProduct: ``conv1.weight``, ``conv1.bias``;
- BatchNorm (+ the Scale fused into it): ``bn1.weight``, ``bn1.bias`` when it
  has an affine part, ``bn1.running_mean``, ``bn1.running_var``, and
  ``bn1.num_batches_tracked`` (an int64 scalar 0), a buffer every
  ``nn.BatchNorm*d`` that tracks running statistics has, affine or not, so a
  strict load fails without it;
- PReLU ``prelu.weight``; Scale ``scale.weight`` (+ ``scale.bias``); Bias
  ``bias.bias``; Embed ``embed.weight`` (+ ``embed.bias``, Caffe's bias, which
  ``nn.Embedding`` does not have);
- LSTM/RNN: ``nn.LSTM``/``nn.RNN`` keys of the first layer, ``lstm.weight_ih_l0``,
  ``lstm.weight_hh_l0``, ``lstm.bias_ih_l0``, ``lstm.bias_hh_l0`` (zeros: Caffe
  has one bias); a Caffe RNN's output projection is the Linear
  ``rnn_output.weight``, ``rnn_output.bias``.

Other backends give ``<layer>.<weight name>`` (``conv1.kernel`` with
tensorflow), and ``<layer>.<index>`` where the backend named nothing (``caffe``).

Metadata (``__metadata__``, string to string, as the format requires):
``backend`` and ``data_format`` as plain strings (left out when unset);
``source``, ``batchnorm_eps``, ``name_map``, ``fused`` and ``framework_classes`` as JSON
(see `conversion_metadata`); ``format`` is ``pt`` with PyTorch's names (backend torch), the value
Hugging Face loaders check before they accept a file as PyTorch weights.

Dtypes (F16, F32, F64, I64 and the integer types): a layer that no backend
converted keeps its stored precision (with backend ``caffe`` an fp16 blob
stays F16); in a layer a backend converted for a framework (it has a
``framework_class``) floating tensors are at least F32, the precision frameworks load,
so one layer never mixes fp16 weights with computed float32 statistics.

The file is written here rather than with the ``safetensors`` package, whose
writers need every tensor in memory at once (and as torch tensors for the
torch flavour). The format is small enough to write exactly: an 8-byte
little-endian unsigned header length N, N bytes of UTF-8 JSON starting with
``{`` (at most 100 MB) padded with spaces so the data starts 8-byte aligned,
then the tensors' little-endian, C-order bytes, whose ``data_offsets``
[begin, end) relative to the data start must tile it exactly, in order,
without gaps. Sizes follow from shapes and dtypes alone, so the header is
written first and each tensor's bytes are then placed block by block
(`caffeport.streaming.blocks.iter_placed`, ``pwrite`` at their offsets) from the
transform's view of the caffemodel's memory map, whose pages are released
once written: a transposed kernel is read in its own order rather than
touched whole for every block. Tensors are
laid out widest dtype first so that every tensor starts aligned to its
element size, which lets readers map the file without copies.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

from caffeport.errors import ModelStructureError, OutputError
from caffeport.exporters.registry import (
    EpsTarget,
    ExportOptions,
    conversion_metadata,
    refuse_same_name,
    register_exporter,
    shown_name,
)
from caffeport.exporters.stored import CHUNK_BYTES, blob_names
from caffeport.exporters.stored import written_dtype as stored_dtype
from caffeport.ir import Layer, Net
from caffeport.streaming.blocks import Blob, Progress, iter_placed, stream_placed

#: readers refuse larger headers (the reference implementation's limit)
MAX_HEADER_BYTES = 100 * 1000 * 1000

#: little-endian numpy dtype string -> safetensors dtype name
DTYPES: dict[str, str] = {
    "<f2": "F16", "<f4": "F32", "<f8": "F64", "|i1": "I8", "<i2": "I16", "<i4": "I32", "<i8": "I64",
    "|u1": "U8", "<u2": "U16", "<u4": "U32", "<u8": "U64", "|b1": "BOOL",
}

#: torch_layout's names for an LSTM/RNN, which nn.LSTM/nn.RNN suffix with the layer index
_TORCH_RECURRENT_TARGETS = frozenset({"LSTM", "RNN", "GRU"})
_TORCH_RECURRENT_WEIGHTS = frozenset({"weight_ih", "weight_hh", "bias_ih", "bias_hh"})


def layer_tensors(layer: Layer, torch_names: bool) -> list[tuple[str, Blob]]:
    """(name, array) of every tensor the layer contributes: its blobs, plus PyTorch's BatchNorm counter.

    ``torch_names``: the net has PyTorch's layouts and names (``Conversion.weight_names == "torch"``, set by the
    torch_layout pass, so a user's backend built on it gets them too, whatever its name): nn.LSTM's ``_l0``
    suffixes and BatchNorm's ``num_batches_tracked``.
    """
    names = blob_names(layer)
    if torch_names and layer.framework_class in _TORCH_RECURRENT_TARGETS:
        names = [f"{n}_l0" if n in _TORCH_RECURRENT_WEIGHTS else n for n in names]
    tensors: list[tuple[str, Blob]] = [(f"{layer.name}.{n}", blob) for n, blob in zip(names, layer.blobs)]
    if torch_names and layer.framework_class == "BatchNorm":
        tensors.append((f"{layer.name}.num_batches_tracked", np.zeros((), dtype=np.int64)))
    return tensors


def _metadata(net: Net) -> dict[str, str]:
    metadata: dict[str, str] = {}
    if net.conversion.weight_names == "torch":
        metadata["format"] = "pt"
    for key, value in conversion_metadata(net).items():
        if isinstance(value, str):
            metadata[key] = value
        elif value is not None:
            metadata[key] = json.dumps(value, sort_keys=True)
    return metadata


def safetensors_dtype(layer: Layer, name: str, blob: Blob) -> np.dtype[Any]:
    """`caffeport.exporters.stored.written_dtype`, which safetensors must be able to hold."""
    dtype = stored_dtype(layer, blob, f"tensor {name!r}")
    if dtype.str not in DTYPES:
        raise ModelStructureError(f"tensor {name!r} has dtype {blob.dtype}, which safetensors cannot hold",
                                  layer=layer.name)
    return dtype


def _header(net: Net) -> tuple[bytes, list[tuple[Blob, np.dtype[Any]]]]:
    """The padded header and the tensors in file order, each with the dtype written."""
    tensors: list[tuple[str, Blob, np.dtype[Any]]] = []
    seen: dict[str, Layer] = {}
    torch_names = net.conversion.weight_names == "torch"
    for layer in net.layers:
        for name, blob in layer_tensors(layer, torch_names):
            if name in seen:
                raise refuse_same_name(seen[name], layer, f"the tensor {shown_name(name)}")
            seen[name] = layer
            tensors.append((name, blob, safetensors_dtype(layer, name, blob)))
    tensors.sort(key=lambda t: -t[2].itemsize)  # stable: net order within a width
    header: dict[str, Any] = {"__metadata__": _metadata(net)}
    offset = 0
    for name, blob, dtype in tensors:
        shape = [int(d) for d in blob.shape]
        end = offset + math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPES[dtype.str], "shape": shape, "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % 8)
    if len(text) > MAX_HEADER_BYTES:
        raise OutputError(f"the safetensors header would be {len(text):,} bytes, more than readers accept "
                          f"({MAX_HEADER_BYTES:,})")
    return text, [(blob, dtype) for _, blob, dtype in tensors]



@register_exporter("safetensors",
                   eps=EpsTarget("PyTorch", "nn.BatchNorm2d(C, eps=...)", 1e-5, "the file's metadata, batchnorm_eps"),
                   suffix=".safetensors", default_backend="torch",
                   description="safetensors with PyTorch state_dict names (load_state_dict(load_file(path)))")
def write_safetensors(net: Net, path: Path, options: ExportOptions) -> None:
    """Write ``net``'s tensors to ``path``; layers without blobs have nothing to store, whatever ``options``."""
    header, tensors = _header(net)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        handle.flush()
        starts = itertools.accumulate((math.prod(blob.shape) * dtype.itemsize for blob, dtype in tensors),
                                      initial=8 + len(header))
        progress = Progress(options.progress, sum(math.prod(b.shape) * d.itemsize for b, d in tensors), len(tensors))
        stream_placed(handle.fileno(), ((start + offset * dtype.itemsize, run, index)
                                        for index, ((blob, dtype), start) in enumerate(zip(tensors, starts))
                                        for offset, run in iter_placed(blob, CHUNK_BYTES, dtype, release_source=True)),
                      progress.on_batch)
