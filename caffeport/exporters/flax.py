"""``flax``: Flax variables as ``flax.serialization.msgpack_serialize`` writes them, streamed.

Written with `caffeport.exporters.msgpack_stream` (array bytes placed
straight from the model's map); Flax itself is not needed to write the file.
Backends ``tensorflow`` (the default) and ``cntk``, channels_last: Flax's own
layouts are Keras' HWIO kernels and (in, out) dense kernels, and it flattens
NHWC, so the layers come with Keras' layouts and Keras' class names
(`caffeport.ir.Layer.framework_class`), which the table below maps.

The file is what ``flax.serialization.msgpack_serialize(variables)`` returns
for the variables of a Flax linen model whose submodules are named after the
(sanitised) Caffe layers; ``flax.serialization.msgpack_restore`` reads it
(``from_bytes(template, data)`` too)::

    {"batch_stats": {"bn1": {"mean": ..., "var": ...}, ...},
     "params": {"conv1": {"kernel": ..., "bias": ...}, "bn1": {"scale": ..., "bias": ...}, ...}}

Both collections are always there, ``batch_stats`` empty for a net without
BatchNorm, so ``model.apply(variables, x)`` takes the restored dict as it is.
Per Keras layer class (what the tensorflow backend makes of each Caffe layer):

- Conv1D/2D/3D, Dense: ``kernel``, ``bias`` (``nn.Conv``, grouped ones with
  ``feature_group_count``, and ``nn.Dense``);
- DepthwiseConv2D: ``kernel`` reshaped from Keras' (kh, kw, C, m) to
  (kh, kw, 1, C*m), the kernel of ``nn.Conv(C*m, feature_group_count=C)``;
- Conv2DTranspose: ``kernel`` (kh, kw, out, in), ``bias``: the kernel of
  ``nn.ConvTranspose(..., transpose_kernel=True)`` (which makes it the
  gradient of a convolution, as Caffe's Deconvolution is); use padding
  ``VALID`` and crop Caffe's pad on each side;
- BatchNormalization: ``params`` ``scale`` (gamma) and ``bias`` (beta) when
  the BatchNorm had a Scale, ``batch_stats`` ``mean`` and ``var``; build
  ``nn.BatchNorm(use_running_average=True, epsilon=...)`` with Caffe's eps
  (printed by the conversion; this file has no place for it);
- Embedding: ``embedding``; Caffe's Embed bias is the layer ``<name>_bias``
  with ``bias``;
- PReLU: ``negative_slope``, a scalar for a channel-shared PReLU (Flax's
  ``nn.PReLU``), else Keras' alpha shape (1, 1, C), which broadcasts over NHWC;
- LSTM: ``nn.LSTMCell``'s dense layers, Keras' 4H gate blocks (i, f, c, o)
  split: ``ii``, ``if``, ``ig``, ``io`` hold ``kernel`` (in, H) of the input;
  ``hi``, ``hf``, ``hg``, ``ho`` hold ``kernel`` (H, H) of the hidden state and
  the ``bias``;
- SimpleRNN (a Caffe RNN): ``nn.SimpleCell``'s ``i`` (``kernel``, ``bias``)
  and ``h`` (``kernel``); the output projection is the Dense ``<name>_output``;
- anything else (Scale, Bias, unknown types): the backend's weight names.

Encoding, as Flax does it: maps with string keys in sorted order (Flax's
tree copy sorts them); every array an extension type 1 whose payload is the
msgpack array ``[shape, dtype name, bytes]`` (shape an array of ints, dtype
name NumPy's, e.g. ``"float32"``, bytes the C-order little-endian elements in
a binary string); an array over 2**30 bytes is split, as Flax splits it, into
``{"__msgpack_chunked_array__": true, "shape": {"0": d0, ...}, "chunks":
{"0": <1-D array>, ...}}`` with chunks of 2**30 bytes' worth of elements.
Floating arrays are at least float32, Flax's parameter precision: transforms
hand over views in the stored precision and fp16 widens exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caffeport.exporters.msgpack_stream import Stream, bin_header, ext_header
from caffeport.exporters.registry import EpsTarget, ExportOptions, refuse_same_name, register_exporter, shown_name
from caffeport.exporters.stored import blob_names, written_dtype
from caffeport.ir import Layer, Net
from caffeport.ir.file import import_msgpack
from caffeport.streaming.blocks import Blob, Progress

#: Flax's extension type code for an ndarray
FLAX_NDARRAY_EXT = 1
#: arrays with more bytes than this are split into chunks, as Flax splits them (msgpack objects stay under 2 GiB)
FLAX_MAX_CHUNK_BYTES = 2**30
#: the largest msgpack binary string: an IR blob must fit in one
MAX_BIN_BYTES = 2**32 - 1

#: (Keras layer class, Keras weight name) -> (Flax collection, Flax name)
FLAX_NAMES: dict[tuple[str, str], tuple[str, str]] = {
    ("BatchNormalization", "gamma"): ("params", "scale"),
    ("BatchNormalization", "beta"): ("params", "bias"),
    ("BatchNormalization", "moving_mean"): ("batch_stats", "mean"),
    ("BatchNormalization", "moving_variance"): ("batch_stats", "var"),
    ("Embedding", "embeddings"): ("params", "embedding"),
    ("DepthwiseConv2D", "depthwise_kernel"): ("params", "kernel"),
    ("PReLU", "alpha"): ("params", "negative_slope"),
}
#: Flax LSTMCell's gate letters, in the order of Keras' 4H blocks (Keras' c is Flax's g)
_LSTM_GATES = "ifgo"


@dataclass(frozen=True)
class FlaxLeaf:
    """One Flax array to write: a blob (array or lazy) and the dtype it is written in."""

    blob: Blob
    dtype: np.dtype[Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.blob.shape)


def _flax_leaves(layer: Layer) -> list[tuple[str, tuple[str, ...], Blob]]:
    """(collection, path inside the layer, blob) for each of the layer's Flax variables.

    Blobs that need slicing or reshaping (LSTM gate blocks, depthwise and PReLU
    shapes) are small recurrent or per-channel weights; other blobs go through
    untouched, as the transform's (possibly lazy) views.
    """
    blobs = dict(zip(blob_names(layer), layer.blobs))
    keras_rnn = {"kernel", "recurrent_kernel", "bias"}
    if layer.framework_class in ("LSTM", "SimpleRNN") and set(blobs) == keras_rnn:
        kernel, recurrent, bias = (np.asarray(blobs[n]) for n in ("kernel", "recurrent_kernel", "bias"))
        if layer.framework_class == "SimpleRNN":
            return [("params", ("i", "kernel"), kernel), ("params", ("i", "bias"), bias),
                    ("params", ("h", "kernel"), recurrent)]
        hidden = recurrent.shape[0]
        leaves: list[tuple[str, tuple[str, ...], Blob]] = []
        for index, gate in enumerate(_LSTM_GATES):
            block = slice(index * hidden, (index + 1) * hidden)
            leaves += [("params", (f"i{gate}", "kernel"), kernel[:, block]),
                       ("params", (f"h{gate}", "kernel"), recurrent[:, block]),
                       ("params", (f"h{gate}", "bias"), bias[block])]
        return leaves
    leaves = []
    for name, blob in blobs.items():
        collection, flax_name = FLAX_NAMES.get((layer.framework_class, name), ("params", name))
        if layer.framework_class == "DepthwiseConv2D" and name == "depthwise_kernel":
            kernel = np.asarray(blob)
            blob = kernel.reshape(*kernel.shape[:-2], 1, kernel.shape[-2] * kernel.shape[-1])
        elif layer.framework_class == "PReLU" and name == "alpha" and math.prod(blob.shape) == 1:
            blob = np.asarray(blob).reshape(())
        leaves.append((collection, (flax_name,), blob))
    return leaves


def _flax_variables(net: Net) -> dict[str, dict[str, Any]]:
    """``{"batch_stats": {...}, "params": {...}}`` with a `FlaxLeaf` for each variable of the weighted layers."""
    variables: dict[str, dict[str, Any]] = {"batch_stats": {}, "params": {}}
    seen: dict[str, Layer] = {}
    for layer in net.layers:
        if not layer.blobs:
            continue
        if layer.name in seen:
            raise refuse_same_name(seen[layer.name], layer, f"the Flax module {shown_name(layer.name)}")
        seen[layer.name] = layer
        for collection, path, blob in _flax_leaves(layer):
            node = variables[collection].setdefault(layer.name, {})
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = FlaxLeaf(blob, written_dtype(layer, blob, "/".join(path)))
    return variables


def _flax_ext_header(stream: Stream, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """Flax's ndarray extension object up to its data: ext 1 around ``[shape, dtype name, bin header]``."""
    size = math.prod(shape) * dtype.itemsize
    packer = stream.packer
    prefix = (packer.pack_array_header(3) + packer.pack(list(shape)) + packer.pack(dtype.name)
              + bin_header(size))
    stream.raw(ext_header(FLAX_NDARRAY_EXT, len(prefix) + size) + prefix)


def _flax_leaf(stream: Stream, leaf: FlaxLeaf) -> None:
    shape, dtype = leaf.shape, leaf.dtype
    count = math.prod(shape)
    if count * dtype.itemsize <= FLAX_MAX_CHUNK_BYTES:
        _flax_ext_header(stream, shape, dtype)
        stream.fill(leaf.blob, dtype, [(stream.reserve(count * dtype.itemsize), count)])
        return
    per_chunk = max(1, FLAX_MAX_CHUNK_BYTES // dtype.itemsize)
    starts = range(0, count, per_chunk)
    stream.map(3)  # Flax's own key order: this dict is made after the tree's keys were sorted
    stream.value("__msgpack_chunked_array__")
    stream.value(True)
    stream.value("shape")
    stream.map(len(shape))
    for axis, dim in enumerate(shape):
        stream.value(str(axis))
        stream.value(dim)
    stream.value("chunks")
    stream.map(len(starts))
    segments = []
    for index, start in enumerate(starts):
        size = min(per_chunk, count - start)
        stream.value(str(index))
        _flax_ext_header(stream, (size,), dtype)
        segments.append((stream.reserve(size * dtype.itemsize), size))
    stream.fill(leaf.blob, dtype, segments)


def flax_tree(stream: Stream, tree: Mapping[str, Any]) -> None:
    stream.map(len(tree))
    for key in sorted(tree):
        stream.value(key, f"the name {key!r}")
        value = tree[key]
        if isinstance(value, Mapping):
            flax_tree(stream, value)
        else:
            _flax_leaf(stream, value)


@register_exporter("flax",
                   eps=EpsTarget("Flax", "nn.BatchNorm(epsilon=...)", 1e-5, "not in the msgpack file: note it here"),
                   suffix=".msgpack", default_backend="tensorflow", backends=("tensorflow", "cntk"),
                   description="Flax variables {'params', 'batch_stats'} as flax.serialization.msgpack_serialize")
def write_flax(net: Net, path: Path, options: ExportOptions) -> None:
    """Write ``net``'s Flax variables to ``path``; layers without blobs have no variables, whatever ``options``."""
    msgpack = import_msgpack("the flax format")
    variables = _flax_variables(net)
    leaves = list(_leaves(variables))
    progress = Progress(options.progress, sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in leaves),
                        len(leaves))
    with open(path, "wb") as handle:
        flax_tree(Stream(handle, msgpack, progress), variables)


def _leaves(tree: Mapping[str, Any]) -> Iterator[FlaxLeaf]:
    for value in tree.values():
        if isinstance(value, FlaxLeaf):
            yield value
        else:
            yield from _leaves(value)
