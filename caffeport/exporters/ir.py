"""``ir``: caffeport's whole IR as plain msgpack, the file `caffeport.load_ir` reads back exactly.

The whole net: names, types, bottoms, tops, params, shapes, weight names,
framework classes, blobs with dtype and shape, metadata, report. No pickle,
no extension types: `caffeport.ir.file` documents the exact layout and reads
it. The writer is here, above the IR, because it streams the blobs with
`caffeport.exporters.msgpack_stream` (and so `caffeport.streaming`) rather
than holding them in memory; the reader needs no streaming.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from caffeport.errors import OutputError
from caffeport.exporters.msgpack_stream import MAX_BIN_BYTES, Stream, bin_header
from caffeport.exporters.registry import ExportOptions, register_exporter
from caffeport.exporters.stored import little_endian
from caffeport.ir import Layer, Net
from caffeport.ir.file import IR_KEY, IR_VERSION, import_msgpack
from caffeport.streaming.blocks import Blob, Progress


def _blob(stream: Stream, blob: Blob, layer: str, index: int) -> None:
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
    stream.raw(bin_header(size))
    stream.fill(blob, dtype, [(stream.reserve(size), math.prod(shape))])


def _shapes(shapes: list[tuple[int, ...] | None]) -> list[list[int] | None]:
    return [None if s is None else [int(d) for d in s] for s in shapes]


def _layer(stream: Stream, layer: Layer) -> None:
    fields: list[tuple[str, Any]] = [
        ("name", layer.name), ("type", layer.type), ("bottoms", list(layer.bottoms)), ("tops", list(layer.tops)),
        ("params", layer.params), ("bottom_shapes", _shapes(layer.bottom_shapes)),
        ("top_shapes", _shapes(layer.top_shapes)), ("weight_names", list(layer.weight_names)),
        ("framework_class", layer.framework_class),
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
        (IR_KEY, IR_VERSION), ("name", net.name), ("source_format", net.source_format),
        ("caffemodel_path", net.caffemodel_path), ("prototxt_path", net.prototxt_path),
        ("inputs", {name: [int(d) for d in shape] for name, shape in net.inputs.items()}),
        ("warnings", list(net.warnings)), ("match", match),
        ("report", [{"layer": e.layer, "action": e.action, "detail": e.detail} for e in net.report]),
        ("metadata", net.conversion.as_dict()),
    ]
    blobs = [blob for layer in net.layers for blob in layer.blobs]
    progress = Progress(options.progress, sum(math.prod(b.shape) * np.dtype(b.dtype).itemsize for b in blobs),
                        len(blobs))
    with open(path, "wb") as handle:
        stream = Stream(handle, msgpack, progress)
        stream.map(len(fields) + 1)
        for key, value in fields:
            stream.value(key)
            stream.value(value, f"the net's {key}")
        stream.value("layers")
        stream.array_header(len(net.layers))
        for layer in net.layers:
            _layer(stream, layer)
