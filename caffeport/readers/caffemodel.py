"""Read a binary ``.caffemodel`` (a serialised ``NetParameter``) into a `Net`.

All three generations Caffe ever wrote are decoded here: V2 (``layer``, field
100, string types), V1 (``layers``, field 2, enum types) and V0 (a V1 entry
wrapping an old ``layer`` message whose blobs sit in field 50). The file is
memory-mapped and walked once; blob arrays are views onto the map.
"""

from __future__ import annotations

import os
from typing import Any

from caffeport.errors import CaffeportError, InputFileError, ModelStructureError
from caffeport.ir import Layer, Net, Shape
from caffeport.readers import caffe_schema, v0_layers
from caffeport.readers.blob_proto import decode_blob
from caffeport.readers.files import map_file, sniff
from caffeport.readers.messages import decode_message
from caffeport.readers.wire import LENGTH, VARINT, Field, Reader, signed64

# NetParameter
_NET_NAME, _NET_LAYERS_V1, _NET_INPUT, _NET_INPUT_DIM, _NET_INPUT_SHAPE, _NET_LAYER = 1, 2, 3, 4, 8, 100
# LayerParameter (V2)
_NAME, _TYPE, _BOTTOM, _TOP, _BLOBS = 1, 2, 3, 4, 7
# V1LayerParameter
_V1_V0LAYER, _V1_BOTTOM, _V1_TOP, _V1_NAME, _V1_TYPE, _V1_BLOBS = 1, 2, 3, 4, 5, 6
#: what one layer counts against the reader's object budget (the Layer, its lists and dicts)
_LAYER_COST = 16


def read_caffemodel(path: str | os.PathLike[str]) -> Net:
    """Decode the caffemodel at ``path``: layers, parameters and blobs, no prototxt needed."""
    buf = map_file(path)
    kind = sniff(buf[:512])
    if kind == "text":
        raise InputFileError(
            "this is a text file (a .prototxt?), not a binary .caffemodel: pass it with -p/--prototxt", path=path
        )
    if kind == "hdf5":
        raise InputFileError("this is an HDF5 file: read it as a Caffe HDF5 snapshot (.caffemodel.h5)", path=path)
    reader = Reader(buf, path=os.fspath(path))
    return decode_net(reader, 0, len(buf))


def decode_net(reader: Reader, start: int, end: int) -> Net:
    net = Net(caffemodel_path=reader.path)
    legacy_inputs: list[str] = []
    legacy_dims: list[int] = []
    legacy_shapes: list[Shape] = []
    generations: set[str] = set()
    fork_fields: set[int] = set()
    for field in reader.fields(start, end):
        if field.number == _NET_LAYER:
            reader.expect(field, LENGTH)
            net.layers.append(_decode_layer_v2(reader, field, fork_fields))
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
    net.format = "V0" if "V0" in generations else "V1" if "V1" in generations else "V2"
    if fork_fields:
        net.warnings.append(
            f"LayerParameter fields {sorted(fork_fields)} hold plain values where BVLC Caffe has parameter"
            " messages (a Caffe fork's extension): skipped"
        )
    if len(generations) > 1:
        net.warnings.append(f"the file mixes layer generations {sorted(generations)}")
    net.inputs = legacy_net_inputs(legacy_inputs, legacy_dims, legacy_shapes, reader.path)
    net.inputs.update(input_layer_shapes(net.layers))
    v0_layers.fold_padding_layers(net)
    warn_duplicate_names(net)
    return net


def warn_duplicate_names(net: Net) -> None:
    """A warning for each layer name used more than once (Caffe allows it; matching by name then takes the last)."""
    counts: dict[str, int] = {}
    for layer in net.layers:
        counts[layer.name] = counts.get(layer.name, 0) + 1
    duplicated = [(name, n) for name, n in counts.items() if n > 1]
    for name, n in duplicated[:20]:
        net.warnings.append(f"{n} layers are named {name!r}: weights are matched by name, so only one can get them")
    if len(duplicated) > 20:
        net.warnings.append(f"... and {len(duplicated) - 20} more layer names used more than once")


def _decode_layer_v2(reader: Reader, outer: Field, forks: set[int]) -> Layer:
    """Decode one V2 LayerParameter.

    Forks reuse BVLC's parameter field numbers for other things (the SSD-Caffe
    fork behind yunet stores plain integers in fields 145-148): a parameter
    field that is not a message is skipped and its number added to ``forks``.
    """
    reader.charge(_LAYER_COST, outer.offset)
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
    return layer


def _decode_layer_v1(reader: Reader, outer: Field) -> tuple[Layer, str]:
    reader.charge(_LAYER_COST, outer.offset)
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


def v1_type_name(value: int | str | None) -> str:
    """The V2 type string of a V1 layer type (enum number from binary, enum name from text)."""
    if value is None:
        return "NONE"
    if isinstance(value, str):
        number = caffe_schema.V1_TYPE_NUMBERS.get(value)
        return caffe_schema.V1_LAYER_TYPES.get(number, value) if number is not None else value
    return caffe_schema.V1_LAYER_TYPES.get(value, f"V1_TYPE_{value}")


def _normalize_params(params: dict[str, list[dict[str, list[Any]]]], reader: Reader, offset: int) -> dict[str, Any]:
    try:
        return caffe_schema.normalize_params(params)
    except CaffeportError as exc:
        raise reader.error(exc.message, offset) from None


def legacy_net_inputs(
    names: list[str], dims: list[int], shapes: list[Shape], path: str | None
) -> dict[str, Shape]:
    """The net inputs declared with NetParameter's ``input`` + ``input_dim``/``input_shape``.

    Caffe takes four ``input_dim`` values per input, or one ``input_shape`` per
    input; anything else is a malformed net.
    """
    if not names:
        return {}
    if shapes:
        if len(shapes) != len(names):
            raise ModelStructureError(f"{len(names)} net inputs but {len(shapes)} input_shape entries", path=path)
        return dict(zip(names, shapes))
    if dims:
        if len(dims) != 4 * len(names):
            raise ModelStructureError(
                f"{len(names)} net inputs need {4 * len(names)} input_dim values, found {len(dims)}", path=path
            )
        return {name: tuple(dims[4 * i : 4 * i + 4]) for i, name in enumerate(names)}
    return {name: () for name in names}


def input_layer_shapes(layers: list[Layer]) -> dict[str, Shape]:
    """Shapes declared by ``Input`` layers: one ``shape`` per top, or one shared by all tops."""
    found: dict[str, Shape] = {}
    for layer in layers:
        if layer.type != "Input":
            continue
        shapes = layer.param("input_param").get("shape", [])
        for i, top in enumerate(layer.tops):
            if not shapes:
                continue
            shape = shapes[i] if len(shapes) > 1 and i < len(shapes) else shapes[0]
            found[top] = tuple(int(d) for d in shape.get("dim", []))
    return found
