"""The caffeport IR file: a whole `Net` as one msgpack document, and `load_ir` to read it back.

Why it exists: a converted net (or a net as read) can be handed to another
process or language, or kept, without Caffe's files and without caffeport's
readers, and read back exactly: every layer, parameter, shape, blob (dtype and
bits), the report and the metadata. It is written by the ``ir`` format
(``caffeport convert ... --format ir``, default backend ``caffe``: the net as
read, blobs untouched).

Why msgpack, and this layout: it is safe to read (no pickle, no code: only
maps, arrays, strings, numbers, booleans, nil and binary strings; msgpack
extension types are not used, and `load_ir` refuses them), any language has a
reader, and blob bytes are stored as they are, so reading costs no parsing.

Format, version 2. The file is exactly one msgpack map (no trailing bytes)
whose keys are strings, in this order:

=====================  ===================================================================
key                    value
=====================  ===================================================================
``caffeport_ir``       int, the format version (2). Readers refuse versions they do not know.
``name``               str, the net's name
``source_format``      str, what the net was read from: ``V2``, ``V1``, ``V0``, ``HDF5``, ``prototxt``
``caffemodel_path``    str or nil
``prototxt_path``      str or nil
``inputs``             map: net input blob name -> array of int (its shape), in declaration order
``warnings``           array of str
``match``              nil, or map ``{"missing_weights": [str], "unused_weights": [str]}``
``report``             array of maps ``{"layer": str, "action": str, "detail": str}``
``metadata``           map: what transforms recorded (`caffeport.ir.Conversion`: ``backend``,
                       ``data_format``, ``weight_names``, ``batchnorm_eps``, ``fused``,
                       ``name_map``, ``matlab``, ``kernels_flipped``)
``layers``             array of layer maps, in net order (below)
=====================  ===================================================================

A layer map has the keys ``name`` (str), ``type`` (str, the V2 type string),
``bottoms`` and ``tops`` (arrays of str), ``params`` (map: the ``*_param``
messages as nested maps, as `Layer.params` holds them), ``bottom_shapes`` and
``top_shapes`` (arrays whose items are an array of int, or nil where the shape
is unknown), ``weight_names`` (array of str), ``framework_class`` (str) and ``blobs``:
an array of blob maps

    ``{"dtype": str, "shape": [int, ...], "data": bin}``

where ``dtype`` is NumPy's type string of the stored, little-endian element
type (``"<f4"`` float32, ``"<f2"`` float16, ``"<f8"`` float64, ``"<i4"``,
``"<u4"``, ...; always of kind bool, int, uint, float or complex), ``shape`` is
the blob's shape (``[]`` for a 0-d blob) and ``data`` its elements in C order,
little-endian: exactly ``product(shape) * itemsize`` bytes. A blob is one
msgpack binary string, so it is at most 4 GiB - 1 bytes; the writer refuses
larger ones.

Values in ``params`` and ``metadata`` round-trip as msgpack gives them back:
tuples come back as lists (caffeport itself stores lists there). Floats are
float64, so Python floats round-trip exactly.

Version 1 (caffeport 0.1 before the names were made unambiguous) is the same
document with ``format`` for ``source_format`` and a layer's ``target`` for
``framework_class``; `load_ir` reads both versions.

Reading needs the ``msgpack`` package (``pip install caffeport[msgpack]``).
"""

from __future__ import annotations

import math
import mmap
import os
from typing import Any, NoReturn

import numpy as np

from caffeport.errors import CaffeportError, DecodeError, InputFileError
from caffeport.ir import Conversion, Layer, MatchReport, Net, ReportEntry

#: the key that marks a caffeport IR file, holding its format version
IR_KEY = "caffeport_ir"
#: the version the ``ir`` format writes
IR_VERSION = 2
#: version -> (the net's source format key, a layer's framework class key): what changed between versions
_KEYS = {1: ("format", "target"), 2: ("source_format", "framework_class")}
#: dtype kinds a blob may have: bool, signed and unsigned int, float, complex (never objects or records)
BLOB_KINDS = frozenset("biufc")
#: pip extra that installs what msgpack-based files need
MSGPACK_EXTRA = "pip install caffeport[msgpack]"

__all__ = ["IR_KEY", "IR_VERSION", "load_ir"]


def import_msgpack(purpose: str) -> Any:
    """The ``msgpack`` module, or a `CaffeportError` saying how to install it."""
    try:
        import msgpack
    except ImportError:
        raise CaffeportError(f"{purpose} needs the msgpack package: {MSGPACK_EXTRA}") from None
    return msgpack


def load_ir(path: str | os.PathLike[str]) -> Net:
    """Read an IR file written by the ``ir`` format back into the `Net` it came from.

    Blobs are read-only arrays with the stored dtype and shape, bit for bit.
    A file that is not an IR file, is from a newer caffeport, or is malformed
    raises a `CaffeportError` naming it.
    """
    msgpack = import_msgpack("reading a caffeport IR file")
    document = _decode(msgpack, path)
    if not isinstance(document, dict) or IR_KEY not in document:
        raise InputFileError(f"not a caffeport IR file (no {IR_KEY!r} key at the top)", path=path)
    version = document[IR_KEY]
    if isinstance(version, bool) or version not in _KEYS:
        raise InputFileError(f"IR format version {version!r}; this caffeport reads versions "
                             f"{', '.join(map(str, _KEYS))}", path=path)
    return _Reader(path, version).net(document)


def _decode(msgpack: Any, path: str | os.PathLike[str]) -> Any:
    def refuse_ext(code: int, data: bytes) -> NoReturn:
        raise ValueError(f"msgpack extension type {code} (IR files use none)")

    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise InputFileError("is empty", path=path)
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                return msgpack.unpackb(mapped, raw=False, ext_hook=refuse_ext, strict_map_key=True)
    except OSError as exc:
        raise InputFileError(f"cannot read: {exc.strerror or exc}", path=path) from None
    except msgpack.ExtraData:
        raise DecodeError("trailing bytes after the IR document", path=path) from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DecodeError(f"not a valid msgpack IR document: {exc}", path=path) from None


class _Reader:
    """Turns the decoded document into IR objects, checking each value's type on the way."""

    def __init__(self, path: str | os.PathLike[str], version: int = IR_VERSION) -> None:
        self.path = path
        self.source_format_key, self.framework_class_key = _KEYS[version]

    def conversion(self, values: dict[str, Any]) -> Conversion:
        try:
            return Conversion.from_dict(values)
        except (TypeError, ValueError) as exc:
            self.fail(f"'metadata': {exc}")

    def fail(self, message: str, layer: str | None = None) -> NoReturn:
        raise DecodeError(message, path=self.path, layer=layer)

    def field(self, mapping: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str = "",
              layer: str | None = None) -> Any:
        if key not in mapping:
            self.fail(f"{where}missing key {key!r}", layer)
        value = mapping[key]
        if not isinstance(value, kind):
            self.fail(f"{where}{key!r} is a {type(value).__name__}", layer)
        return value

    def strings(self, value: Any, what: str, layer: str | None = None) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(f"{what} is not a list of strings", layer)
        return list(value)

    def shape(self, value: Any, what: str, layer: str | None = None) -> tuple[int, ...]:
        if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in value):
            self.fail(f"{what} is not a shape (a list of non-negative ints)", layer)
        return tuple(value)

    def net(self, doc: dict[str, Any]) -> Net:
        inputs = self.field(doc, "inputs", dict)
        match = doc.get("match")
        if match is not None and not isinstance(match, dict):
            self.fail("'match' is neither nil nor a map")
        report = []
        for entry in self.field(doc, "report", list):
            if not isinstance(entry, dict):
                self.fail("a 'report' entry is not a map")
            report.append(ReportEntry(self.field(entry, "layer", str, "report: "),
                                      self.field(entry, "action", str, "report: "),
                                      self.field(entry, "detail", str, "report: ")))
        return Net(
            name=self.field(doc, "name", str),
            layers=[self.layer(item) for item in self.field(doc, "layers", list)],
            inputs={str(name): self.shape(shape, f"input {name!r}") for name, shape in inputs.items()},
            source_format=self.field(doc, self.source_format_key, str),
            caffemodel_path=self.field(doc, "caffemodel_path", (str, type(None))),
            prototxt_path=self.field(doc, "prototxt_path", (str, type(None))),
            match=None if match is None else MatchReport(
                missing_weights=self.strings(match.get("missing_weights"), "match.missing_weights"),
                unused_weights=self.strings(match.get("unused_weights"), "match.unused_weights")),
            warnings=self.strings(self.field(doc, "warnings", list), "warnings"),
            report=report,
            conversion=self.conversion(self.field(doc, "metadata", dict)),
        )

    def layer(self, item: Any) -> Layer:
        if not isinstance(item, dict):
            self.fail("a 'layers' entry is not a map")
        name = self.field(item, "name", str, "layer: ")
        return Layer(
            name=name,
            type=self.field(item, "type", str, layer=name),
            bottoms=self.strings(self.field(item, "bottoms", list, layer=name), "bottoms", name),
            tops=self.strings(self.field(item, "tops", list, layer=name), "tops", name),
            params=self.field(item, "params", dict, layer=name),
            blobs=[self.blob(b, name, i) for i, b in enumerate(self.field(item, "blobs", list, layer=name))],
            bottom_shapes=self.shapes(self.field(item, "bottom_shapes", list, layer=name), "bottom_shapes", name),
            top_shapes=self.shapes(self.field(item, "top_shapes", list, layer=name), "top_shapes", name),
            weight_names=self.strings(self.field(item, "weight_names", list, layer=name), "weight_names", name),
            framework_class=self.field(item, self.framework_class_key, str, layer=name),
        )

    def shapes(self, values: list[Any], what: str, layer: str) -> list[tuple[int, ...] | None]:
        return [None if v is None else self.shape(v, what, layer) for v in values]

    def blob(self, item: Any, layer: str, index: int) -> np.ndarray:
        where = f"blob {index}: "
        if not isinstance(item, dict):
            self.fail(f"{where}not a map", layer)
        try:
            dtype = np.dtype(self.field(item, "dtype", str, where, layer))
        except TypeError:
            self.fail(f"{where}unknown dtype {item['dtype']!r}", layer)
        if dtype.kind not in BLOB_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            self.fail(f"{where}dtype {dtype} is not a plain numeric type", layer)
        shape = self.shape(self.field(item, "shape", list, where, layer), f"{where}shape", layer)
        data = self.field(item, "data", bytes, where, layer)
        expected = math.prod(shape) * dtype.itemsize
        if len(data) != expected:
            self.fail(f"{where}{len(data)} data bytes, but shape {shape} of {dtype} needs {expected}", layer)
        return np.frombuffer(data, dtype=dtype).reshape(shape)
