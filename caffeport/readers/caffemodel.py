"""Read a binary ``.caffemodel`` (a serialised ``NetParameter``) into a `Net`.

All three generations Caffe ever wrote are decoded here: V2 (``layer``, field
100, string types), V1 (``layers``, field 2, enum types) and V0 (a V1 entry
wrapping an old ``layer`` message whose blobs sit in field 50). The file is
memory-mapped and walked once; blob arrays are views onto the map.
"""

from __future__ import annotations

import os
from typing import Any

from caffeport.codec import caffe_schema
from caffeport.codec.messages import decode_message
from caffeport.codec.wire import LENGTH, VARINT, Field, Reader, signed64
from caffeport.errors import CaffeportError, DecodeError, InputFileError, option_error
from caffeport.ir import Layer, Net, Shape
from caffeport.readers import v0_layers
from caffeport.readers.blob_proto import decode_blob
from caffeport.readers.files import check_not_foreign, map_file, sniff
from caffeport.readers.net_common import (
    LAYER_COST,
    input_layer_shapes,
    legacy_net_inputs,
    name_list,
    v1_type_name,
    warn_duplicate_names,
)

# NetParameter
_NET_NAME, _NET_LAYERS_V1, _NET_INPUT, _NET_INPUT_DIM, _NET_INPUT_SHAPE, _NET_LAYER = 1, 2, 3, 4, 8, 100
# LayerParameter (V2)
_NAME, _TYPE, _BOTTOM, _TOP, _BLOBS = 1, 2, 3, 4, 7
# V1LayerParameter
_V1_V0LAYER, _V1_BOTTOM, _V1_TOP, _V1_NAME, _V1_TYPE, _V1_BLOBS = 1, 2, 3, 4, 5, 6


def read_caffemodel(path: str | os.PathLike[str]) -> Net:
    """Decode the caffemodel at ``path``: layers, parameters and blobs, no prototxt needed."""
    buf = map_file(path)
    check_not_foreign(buf[:512], path)
    kind = sniff(buf[:512])
    if kind == "text":
        raise option_error(InputFileError, "this is a text file (a .prototxt?), not a binary .caffemodel: pass it as "
                           "{prototxt=}PATH", path=path)
    if kind == "hdf5":
        raise InputFileError("this is an HDF5 file: read it as a Caffe HDF5 snapshot (.caffemodel.h5)", path=path)
    reader = Reader(buf, path=os.fspath(path))
    try:
        return decode_net(reader, 0, len(buf))
    except DecodeError:
        shape = _blob_shape_if_blob(buf, os.fspath(path))
        if shape is None:
            raise
    raise InputFileError(
        f"this is a BlobProto (a .binaryproto such as a mean image, shape {shape}), not a caffemodel: read it with"
        f" `caffeport mean {os.fspath(path)} -o mean.npy` (or caffeport.read_blob)", path=path
    )


def _blob_shape_if_blob(buf: Any, path: str) -> tuple[int, ...] | None:
    """The shape of the whole file read as one non-empty BlobProto, or None if it is not one.

    Asked only once the file failed as a NetParameter, which a ``.binaryproto`` always does (it has
    no layer fields, and its field 1, ``num``, is a number where a NetParameter has its name): the
    two messages share field numbers, so only decoding the whole file as a blob tells a mean file
    from a corrupt model.
    """
    try:
        blob = decode_blob(Reader(buf, path=path), 0, len(buf), standalone=True)
    except CaffeportError:
        return None
    return tuple(blob.shape) if blob.size else None


def decode_net(reader: Reader, start: int, end: int) -> Net:
    net = Net(caffemodel_path=reader.path)
    legacy_inputs: list[str] = []
    legacy_dims: list[int] = []
    legacy_shapes: list[Shape] = []
    generations: set[str] = set()
    fork_fields: dict[tuple[int, ...], list[str]] = {}
    fields = reader.fields(start, end)
    while True:
        reader.layer = None  # an error between layers must not name the last layer decoded
        try:
            field = next(fields, None)
        except DecodeError as exc:
            raise _top_level_error(reader, exc, net.layers, end) from None
        if field is None:
            break
        if field.number == _NET_LAYER:
            reader.expect(field, LENGTH)
            layer, forks = _decode_layer_v2(reader, field)
            net.layers.append(layer)
            if forks:
                fork_fields.setdefault(tuple(sorted(forks)), []).append(layer.name)
            generations.add("V2")
        elif field.number == _NET_LAYERS_V1:
            reader.expect(field, LENGTH)
            layer, generation = _decode_layer_v1(reader, field)
            net.layers.append(layer)
            generations.add(generation)
        elif field.number == _NET_NAME:
            net.name = reader.string(field)
        elif field.number == _NET_INPUT:
            legacy_inputs.append(reader.string(field))
        elif field.number == _NET_INPUT_DIM:
            legacy_dims.extend(signed64(v) for v in reader.packed_varints(field))
        elif field.number == _NET_INPUT_SHAPE:
            reader.expect(field, LENGTH)
            shape = decode_message(reader, field.start, field.end, "BlobShape")
            legacy_shapes.append(tuple(int(d) for d in shape.get("dim", [])))
    reader.layer = None
    if not net.layers and not legacy_inputs:
        raise reader.error("no layers found: this does not look like a Caffe NetParameter", start)
    net.source_format = "V0" if "V0" in generations else "V1" if "V1" in generations else "V2"
    for numbers, names in fork_fields.items():
        where = name_list(names, "layer") + (" (every layer of the file)" if len(names) == len(net.layers) > 1 else "")
        net.warnings.append(
            f"LayerParameter fields {list(numbers)} hold plain values where BVLC Caffe has parameter"
            f" messages (a Caffe fork's extension), in {where}: skipped"
        )
    if len(generations) > 1:
        net.warnings.append(f"the file mixes layer generations {sorted(generations)}")
    net.inputs = legacy_net_inputs(legacy_inputs, legacy_dims, legacy_shapes, reader.path)
    net.inputs.update(input_layer_shapes(net.layers, reader.path))
    v0_layers.fold_padding_layers(net)
    warn_duplicate_names(net)
    return net


def _top_level_error(reader: Reader, exc: DecodeError, layers: list[Layer], end: int) -> DecodeError:
    """Say which layer a NetParameter-level error lands in: a truncated file cuts one layer's bytes.

    The error is the walker's, at the tag of the field that failed. When that field is a layer
    whose length runs past the end (a truncated download), the layer's name is read from the
    bytes that remain, so the message names the layer that is cut rather than the last whole one.
    """
    offset = exc.offset if exc.offset is not None else 0
    after = f" (after layer {layers[-1].name!r}, the last complete one)" if layers else ""
    cut = _cut_layer(reader, offset, end)
    if cut is None:
        return reader.error(exc.message + after, offset)
    payload, length, name = cut
    claim = f"claims {length:,} bytes but only {end - payload:,} remain in the file"
    truncated = "the file is truncated (an interrupted download?) or corrupt"
    if name is None:
        return reader.error(f"layer {len(layers) + 1} {claim}, which ends before the layer's name is complete{after}:"
                            f" {truncated}", offset)
    return DecodeError(f"this layer (layer {len(layers) + 1}) {claim}: {truncated}", path=reader.path, layer=name,
                       offset=offset)


def _cut_layer(reader: Reader, offset: int, end: int) -> tuple[int, int, str | None] | None:
    """(payload start, claimed length, name or None) if a layer field at ``offset`` runs past ``end``; else None."""
    try:
        key, pos = reader.varint(offset, end)
        if key & 7 != LENGTH or key >> 3 not in (_NET_LAYER, _NET_LAYERS_V1):
            return None
        length, pos = reader.varint(pos, end)
    except DecodeError:
        return None
    if length <= end - pos:
        return None
    name_field = _NAME if key >> 3 == _NET_LAYER else _V1_NAME
    name: str | None = None
    try:
        for inner in reader.fields(pos, end):  # stops with DecodeError at the cut
            if inner.number == name_field and inner.wire_type == LENGTH:
                name = reader.string(inner)
                break
            if key >> 3 == _NET_LAYERS_V1 and inner.number == _V1_V0LAYER and inner.wire_type == LENGTH:
                name = next((reader.string(f) for f in reader.fields(inner.start, inner.end)
                             if f.number == 1 and f.wire_type == LENGTH), None)
    except DecodeError as exc:
        if name is None and key >> 3 == _NET_LAYERS_V1:
            name = _v0_name_in_cut(reader, exc, end)
    return pos, length, name


def _v0_name_in_cut(reader: Reader, exc: DecodeError, end: int) -> str | None:
    """The name inside a V0 ``layer`` that is itself cut (its name comes first in every V0 file Caffe wrote)."""
    offset = exc.offset if exc.offset is not None else end
    try:
        key, pos = reader.varint(offset, end)
        if key != (_V1_V0LAYER << 3 | LENGTH):
            return None
        _, pos = reader.varint(pos, end)
        for inner in reader.fields(pos, end):
            if inner.number == 1 and inner.wire_type == LENGTH:
                return reader.string(inner)
    except DecodeError:
        pass
    return None


def _decode_layer_v2(reader: Reader, outer: Field) -> tuple[Layer, set[int]]:
    """Decode one V2 LayerParameter; also the numbers of the fork fields it holds.

    Forks reuse BVLC's parameter field numbers for other things (the SSD-Caffe
    fork behind yunet stores plain integers in fields 145-148): a parameter
    field that is not a message is skipped and its number returned, so the
    warning can name the layers.
    """
    forks: set[int] = set()
    reader.charge(LAYER_COST, outer.offset)
    layer = Layer(name="", type="")
    params: dict[str, list[dict[str, list[Any]]]] = {}
    reader.layer = None
    for field in reader.fields(outer.start, outer.end):
        number = field.number
        if number == _NAME:
            layer.name = reader.string(field)
            reader.layer = layer.name
        elif number == _TYPE:
            layer.type = reader.string(field)
        elif number == _BOTTOM:
            layer.bottoms.append(reader.string(field))
        elif number == _TOP:
            layer.tops.append(reader.string(field))
        elif number == _BLOBS:
            reader.expect(field, LENGTH)
            layer.blobs.append(decode_blob(reader, field.start, field.end))
        elif number in caffe_schema.LAYER_PARAMS:
            if field.wire_type != LENGTH:
                forks.add(number)
                continue
            key, message = caffe_schema.LAYER_PARAMS[number]
            params.setdefault(key, []).append(decode_message(reader, field.start, field.end, message))
    layer.params = _normalize_params(params, reader, outer.offset)
    return layer, forks


def _decode_layer_v1(reader: Reader, outer: Field) -> tuple[Layer, str]:
    reader.charge(LAYER_COST, outer.offset)
    layer = Layer(name="", type="")
    params: dict[str, list[dict[str, list[Any]]]] = {}
    v0_field: Field | None = None
    type_value: int | None = None
    reader.layer = None
    for field in reader.fields(outer.start, outer.end):
        number = field.number
        if number == _V1_NAME:
            layer.name = reader.string(field)
            reader.layer = layer.name
        elif number == _V1_TYPE:
            reader.expect(field, VARINT)
            type_value = signed64(field.value)
        elif number == _V1_BOTTOM:
            layer.bottoms.append(reader.string(field))
        elif number == _V1_TOP:
            layer.tops.append(reader.string(field))
        elif number == _V1_BLOBS:
            reader.expect(field, LENGTH)
            layer.blobs.append(decode_blob(reader, field.start, field.end))
        elif number == _V1_V0LAYER:
            reader.expect(field, LENGTH)
            v0_field = field
        elif number in caffe_schema.V1_LAYER_PARAMS:
            key, message = caffe_schema.V1_LAYER_PARAMS[number]
            reader.expect(field, LENGTH)
            params.setdefault(key, []).append(decode_message(reader, field.start, field.end, message))
    if v0_field is not None:
        v0 = v0_layers.decode_v0_layer(reader, v0_field.start, v0_field.end)
        layer.name = layer.name or v0.name
        layer.type = v0.type
        layer.blobs = v0.blobs or layer.blobs
        for key, raw in v0.raw_params.items():
            params.setdefault(key, []).append(raw)
        layer.params = _normalize_params(params, reader, outer.offset)
        return layer, "V0"
    layer.type = v1_type_name(type_value)
    layer.params = _normalize_params(params, reader, outer.offset)
    return layer, "V1"


def _normalize_params(params: dict[str, list[dict[str, list[Any]]]], reader: Reader, offset: int) -> dict[str, Any]:
    try:
        return caffe_schema.normalize_params(params)
    except CaffeportError as exc:
        raise reader.error(exc.message, offset) from None
