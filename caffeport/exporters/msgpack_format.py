"""msgpack formats: ``flax`` (Flax variables) and ``ir`` (caffeport's whole IR, read back by `load_ir`).

Both are written here in a streaming way: the small parts (map and array
headers, keys, numbers, strings) are encoded by the ``msgpack`` package; for
each array a binary or extension header written here is followed by room for
its bytes, which `caffeport.streaming.blocks.iter_placed` then fills block by block
straight from the transform's view of the caffemodel's memory map (releasing
its pages), so a multi-GB model never needs a second copy in memory, and a
transposed kernel is read in its own order rather than touched whole for
every block. The
msgpack package is imported only when one of these formats is written; it is
the only extra either needs (``pip install caffeport[msgpack]``), Flax itself
is not needed to write Flax files.

``flax`` (default backend ``tensorflow``, channels_last: Flax's own layouts
are Keras' HWIO kernels and (in, out) dense kernels, and it flattens NHWC)
-------------------------------------------------------------------------------

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

``ir`` (default backend ``caffe``)
----------------------------------

The whole net: names, types, bottoms, tops, params, shapes, weight names,
targets, blobs with dtype and shape, metadata, report. No pickle, no extension
types: see `caffeport.ir.file` for the exact layout and `load_ir`.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from caffeport.errors import ModelStructureError, OutputError
from caffeport.exporters.registry import EpsTarget, ExportOptions, refuse_same_name, register_exporter, shown_name
from caffeport.exporters.stored import CHUNK_BYTES, little_endian, written_dtype
from caffeport.ir import Layer, Net
from caffeport.ir.file import IR_KEY, IR_VERSION, import_msgpack
from caffeport.streaming.blocks import Blob, Progress, iter_placed, stream_placed

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

# msgpack type bytes (msgpack spec): bin 8/16/32, ext 8/16/32, fixext 1/2/4/8/16
_BIN_HEADERS = ((1 << 8, 0xC4, 1), (1 << 16, 0xC5, 2), (1 << 32, 0xC6, 4))
_EXT_HEADERS = ((1 << 8, 0xC7, 1), (1 << 16, 0xC8, 2), (1 << 32, 0xC9, 4))
_FIXEXT = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}


def _bin_header(size: int) -> bytes:
    """The header of a binary string of ``size`` bytes, in the smallest form, as msgpack itself writes it."""
    for limit, type_byte, width in _BIN_HEADERS:
        if size < limit:
            return bytes([type_byte]) + size.to_bytes(width, "big")
    raise OutputError(f"{size:,} bytes do not fit in one msgpack binary string (at most {MAX_BIN_BYTES:,})")


def _ext_header(code: int, size: int) -> bytes:
    """The header of an extension object of ``size`` payload bytes, in the smallest form msgpack allows."""
    if size in _FIXEXT:
        return bytes([_FIXEXT[size], code])
    for limit, type_byte, width in _EXT_HEADERS:
        if size < limit:
            return bytes([type_byte]) + size.to_bytes(width, "big") + bytes([code])
    raise OutputError(f"{size:,} bytes do not fit in one msgpack extension object")


class _Stream:
    """A msgpack document written piece by piece: small values through msgpack, array bytes directly."""

    def __init__(self, handle: BinaryIO, msgpack: Any, progress: Progress | None = None) -> None:
        self.handle = handle
        self.packer = msgpack.Packer(use_bin_type=True, autoreset=True)
        self.progress = progress
        self.filled = 0

    def raw(self, data: bytes | memoryview) -> None:
        self.handle.write(data)

    def value(self, value: Any, what: str = "a value", layer: str | None = None) -> None:
        try:
            self.raw(self.packer.pack(value))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ModelStructureError(f"{what} cannot be stored in msgpack: {exc}", layer=layer) from None

    def map(self, size: int) -> None:
        self.raw(self.packer.pack_map_header(size))

    def array_header(self, size: int) -> None:
        self.raw(self.packer.pack_array_header(size))

    def reserve(self, size: int) -> int:
        """Leave ``size`` bytes for array data at the current position (filled by `fill`); returns it."""
        self.handle.flush()
        position = self.handle.tell()
        self.handle.seek(position + size)
        return position

    def fill(self, blob: Blob, dtype: np.dtype[Any], segments: list[tuple[int, int]]) -> None:
        """Write the blob's C-order values as ``dtype`` into reserved space.

        ``segments`` are (file position, element count) pairs that take the
        elements in order (one segment, or Flax's chunks with headers between
        them). Blocks come from `caffeport.streaming.blocks.iter_placed` in the order
        that reads the source best, which for a transposed view is not the
        output order, and are written where they belong by `stream_placed`.
        """
        self.handle.flush()
        firsts = list(itertools.accumulate((count for _, count in segments), initial=0))

        tag = self.filled
        self.filled += 1

        def placed() -> Iterator[tuple[int, np.ndarray, int]]:
            for offset, run in iter_placed(blob, CHUNK_BYTES, dtype, release_source=True):
                segment = bisect.bisect_right(firsts, offset) - 1
                while run.size:
                    position, count = segments[segment]
                    take = min(run.size, firsts[segment] + count - offset)
                    yield position + (offset - firsts[segment]) * dtype.itemsize, run[:take], tag
                    run, offset, segment = run[take:], offset + take, segment + 1

        stream_placed(self.handle.fileno(), placed(), None if self.progress is None else self.progress.on_batch)



# --------------------------------------------------------------------------
# flax


@dataclass(frozen=True)
class _Leaf:
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
    names = list(layer.weight_names[: len(layer.blobs)])
    names += [str(i) for i in range(len(names), len(layer.blobs))]
    blobs = dict(zip(names, layer.blobs))
    keras_rnn = {"kernel", "recurrent_kernel", "bias"}
    if layer.target in ("LSTM", "SimpleRNN") and set(blobs) == keras_rnn:
        kernel, recurrent, bias = (np.asarray(blobs[n]) for n in ("kernel", "recurrent_kernel", "bias"))
        if layer.target == "SimpleRNN":
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
        collection, flax_name = FLAX_NAMES.get((layer.target, name), ("params", name))
        if layer.target == "DepthwiseConv2D" and name == "depthwise_kernel":
            kernel = np.asarray(blob)
            blob = kernel.reshape(*kernel.shape[:-2], 1, kernel.shape[-2] * kernel.shape[-1])
        elif layer.target == "PReLU" and name == "alpha" and math.prod(blob.shape) == 1:
            blob = np.asarray(blob).reshape(())
        leaves.append((collection, (flax_name,), blob))
    return leaves


def _flax_variables(net: Net) -> dict[str, dict[str, Any]]:
    """``{"batch_stats": {...}, "params": {...}}`` with a `_Leaf` for each variable of the weighted layers."""
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
            node[path[-1]] = _Leaf(blob, written_dtype(layer, blob, "/".join(path)))
    return variables


def _flax_ext_header(stream: _Stream, shape: tuple[int, ...], dtype: np.dtype[Any]) -> None:
    """Flax's ndarray extension object up to its data: ext 1 around ``[shape, dtype name, bin header]``."""
    size = math.prod(shape) * dtype.itemsize
    packer = stream.packer
    prefix = (packer.pack_array_header(3) + packer.pack(list(shape)) + packer.pack(dtype.name)
              + _bin_header(size))
    stream.raw(_ext_header(FLAX_NDARRAY_EXT, len(prefix) + size) + prefix)


def _flax_leaf(stream: _Stream, leaf: _Leaf) -> None:
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


def _flax_tree(stream: _Stream, tree: Mapping[str, Any]) -> None:
    stream.map(len(tree))
    for key in sorted(tree):
        stream.value(key, f"the name {key!r}")
        value = tree[key]
        if isinstance(value, Mapping):
            _flax_tree(stream, value)
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
        _flax_tree(_Stream(handle, msgpack, progress), variables)


def _leaves(tree: Mapping[str, Any]) -> Iterator[_Leaf]:
    for value in tree.values():
        if isinstance(value, _Leaf):
            yield value
        else:
            yield from _leaves(value)


# --------------------------------------------------------------------------
# ir


def _blob(stream: _Stream, blob: Blob, layer: str, index: int) -> None:
    """One blob map; the dtype is the blob's own (little-endian), so `load_ir` gives back the same array."""
    dtype = little_endian(np.dtype(blob.dtype), f"blob {index}", layer)
    shape = [int(d) for d in blob.shape]
    size = math.prod(shape) * dtype.itemsize
    if size > MAX_BIN_BYTES:
        raise OutputError(f"blob {index} has {size:,} bytes; an IR file holds blobs of at most {MAX_BIN_BYTES:,}",
                          layer=layer)
    stream.map(3)
    stream.value("dtype")
    stream.value(dtype.str)
    stream.value("shape")
    stream.value(shape)
    stream.value("data")
    stream.raw(_bin_header(size))
    stream.fill(blob, dtype, [(stream.reserve(size), math.prod(shape))])


def _shapes(shapes: list[tuple[int, ...] | None]) -> list[list[int] | None]:
    return [None if s is None else [int(d) for d in s] for s in shapes]


def _layer(stream: _Stream, layer: Layer) -> None:
    fields: list[tuple[str, Any]] = [
        ("name", layer.name), ("type", layer.type), ("bottoms", list(layer.bottoms)), ("tops", list(layer.tops)),
        ("params", layer.params), ("bottom_shapes", _shapes(layer.bottom_shapes)),
        ("top_shapes", _shapes(layer.top_shapes)), ("weight_names", list(layer.weight_names)),
        ("target", layer.target),
    ]
    stream.map(len(fields) + 1)
    for key, value in fields:
        stream.value(key)
        stream.value(value, key, layer.name)
    stream.value("blobs")
    stream.array_header(len(layer.blobs))
    for index, blob in enumerate(layer.blobs):
        _blob(stream, blob, layer.name, index)


@register_exporter("ir", suffix=".ir.msgpack", default_backend="caffe",
                   description="the whole IR as safe msgpack (caffeport.ir.file.load_ir reads it back exactly)")
def write_ir(net: Net, path: Path, options: ExportOptions) -> None:
    """Write all of ``net`` to ``path``: every layer, weightless ones too, whatever ``options``."""
    msgpack = import_msgpack("the ir format")
    match = None if net.match is None else {"missing_weights": list(net.match.missing_weights),
                                             "unused_weights": list(net.match.unused_weights)}
    fields: list[tuple[str, Any]] = [
        (IR_KEY, IR_VERSION), ("name", net.name), ("format", net.format), ("caffemodel_path", net.caffemodel_path),
        ("prototxt_path", net.prototxt_path),
        ("inputs", {name: [int(d) for d in shape] for name, shape in net.inputs.items()}),
        ("warnings", list(net.warnings)), ("match", match),
        ("report", [{"layer": e.layer, "action": e.action, "detail": e.detail} for e in net.report]),
        ("metadata", net.conversion.as_dict()),
    ]
    blobs = [blob for layer in net.layers for blob in layer.blobs]
    progress = Progress(options.progress, sum(math.prod(b.shape) * np.dtype(b.dtype).itemsize for b in blobs),
                        len(blobs))
    with open(path, "wb") as handle:
        stream = _Stream(handle, msgpack, progress)
        stream.map(len(fields) + 1)
        for key, value in fields:
            stream.value(key)
            stream.value(value, f"the net's {key}")
        stream.value("layers")
        stream.array_header(len(net.layers))
        for layer in net.layers:
            _layer(stream, layer)
