"""The V0 layer format (Caffe before 2014): decode it and express it as V2.

A V0 net stores each layer as a V1 ``layers`` entry wrapping an old
``V0LayerParameter`` (field 1) that has flat parameter fields (num_output,
kernelsize, ...) and its blobs in field 50. Caffe upgraded such nets on load
(``UpgradeV0LayerParameter``); we do the same mapping so that the rest of
caffeport only ever sees V2 layers. V0 "padding" layers are folded into the
convolution that follows them, as Caffe's upgrade does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffeport.codec import caffe_schema
from caffeport.codec.caffe_schema import FieldSpec
from caffeport.codec.messages import decode_message
from caffeport.codec.wire import LENGTH, Reader
from caffeport.errors import ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.readers.blob_proto import decode_blob

_BLOBS = 50

#: V0LayerParameter fields that carry something a converter uses (numbers from caffe.proto)
_V0_FIELDS: dict[int, FieldSpec] = {
    spec.number: spec
    for spec in (
        FieldSpec(1, "name", "string"),
        FieldSpec(2, "type", "string"),
        FieldSpec(3, "num_output", "uint32"),
        FieldSpec(4, "biasterm", "bool", default=True),
        FieldSpec(7, "pad", "uint32", default=0),
        FieldSpec(8, "kernelsize", "uint32"),
        FieldSpec(9, "group", "uint32", default=1),
        FieldSpec(10, "stride", "uint32", default=1),
        FieldSpec(11, "pool", "enum", default="MAX", type_name="PoolMethod"),
        FieldSpec(12, "dropout_ratio", "float", default=0.5),
        FieldSpec(13, "local_size", "uint32", default=5),
        FieldSpec(14, "alpha", "float", default=1.0),
        FieldSpec(15, "beta", "float", default=0.75),
        FieldSpec(22, "k", "float", default=1.0),
        FieldSpec(65, "concat_dim", "uint32", default=1),
    )
}
caffe_schema.MESSAGES.setdefault("V0LayerParameter", _V0_FIELDS)

#: V0 flat field -> (V2 param key, V2 field name), per V2 type
_PARAM_MAP: dict[str, dict[str, tuple[str, str]]] = {
    "Convolution": {
        "num_output": ("convolution_param", "num_output"),
        "biasterm": ("convolution_param", "bias_term"),
        "pad": ("convolution_param", "pad"),
        "kernelsize": ("convolution_param", "kernel_size"),
        "group": ("convolution_param", "group"),
        "stride": ("convolution_param", "stride"),
    },
    "InnerProduct": {
        "num_output": ("inner_product_param", "num_output"),
        "biasterm": ("inner_product_param", "bias_term"),
    },
    "Pooling": {
        "pool": ("pooling_param", "pool"),
        "kernelsize": ("pooling_param", "kernel_size"),
        "stride": ("pooling_param", "stride"),
        "pad": ("pooling_param", "pad"),
    },
    "Dropout": {"dropout_ratio": ("dropout_param", "dropout_ratio")},
    "LRN": {
        "local_size": ("lrn_param", "local_size"),
        "alpha": ("lrn_param", "alpha"),
        "beta": ("lrn_param", "beta"),
        "k": ("lrn_param", "k"),
    },
    "Concat": {"concat_dim": ("concat_param", "concat_dim")},
    "Padding": {"pad": ("padding_param", "pad")},
}


@dataclass
class V0Layer:
    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)
    raw_params: dict[str, dict[str, list[Any]]] = field(default_factory=dict)


def decode_v0_layer(reader: Reader, start: int, end: int) -> V0Layer:
    """Decode a V0LayerParameter and map its flat fields to V2 ``*_param`` raw dicts."""
    blobs = []
    for f in reader.fields(start, end):
        if f.number == _BLOBS:
            reader.expect(f, LENGTH)
            blobs.append(decode_blob(reader, f.start, f.end))
    raw = decode_message(reader, start, end, "V0LayerParameter")
    v0_type = str(raw.get("type", [""])[-1])
    layer_type = v2_type(v0_type)
    name = str(raw.get("name", [""])[-1])
    return V0Layer(name=name, type=layer_type, blobs=blobs, raw_params=v2_params(raw, layer_type))


def v2_type(v0_type: str) -> str:
    """The V2 type string of a V0 type string ("conv" -> "Convolution")."""
    return caffe_schema.V0_LAYER_TYPES.get(v0_type, "Padding" if v0_type == "padding" else v0_type)


def v2_params(raw: dict[str, list[Any]], layer_type: str) -> dict[str, dict[str, list[Any]]]:
    """V0's flat fields (raw form) regrouped into the V2 ``*_param`` messages of ``layer_type``."""
    params: dict[str, dict[str, list[Any]]] = {}
    for flat, (key, name) in _PARAM_MAP.get(layer_type, {}).items():
        if flat in raw:
            params.setdefault(key, {})[name] = raw[flat]
    return params


def fold_padding_layers(net: Net) -> None:
    """Fold each V0 padding layer into the convolution reading its output, as Caffe's upgrade does.

    Convolutions are indexed by bottom once (and the index kept up to date as
    bottoms are rewired), so a file of many padding layers costs linear time.
    """
    padding = [layer for layer in net.layers if layer.type == "Padding"]
    if not padding:
        return
    convs_by_bottom: dict[str, dict[int, Layer]] = {}
    for layer in net.layers:
        if layer.type == "Convolution":
            for bottom in layer.bottoms:
                convs_by_bottom.setdefault(bottom, {})[id(layer)] = layer
    folded: set[int] = set()
    for pad_layer in padding:
        if len(pad_layer.tops) != 1 or len(pad_layer.bottoms) != 1:
            continue
        top, bottom = pad_layer.tops[0], pad_layer.bottoms[0]
        consumers = list(convs_by_bottom.get(top, {}).values())
        if len(consumers) != 1:
            net.warnings.append(f"V0 padding layer {pad_layer.name!r} does not feed exactly one convolution")
            continue
        conv = consumers[0]
        conv.params.setdefault("convolution_param", {})["pad"] = [_padding(net, pad_layer)]
        conv.bottoms = [bottom if b == top else b for b in conv.bottoms]
        del convs_by_bottom[top][id(conv)]
        convs_by_bottom.setdefault(bottom, {})[id(conv)] = conv
        folded.add(id(pad_layer))
    net.layers = [layer for layer in net.layers if id(layer) not in folded]


def _padding(net: Net, layer: Layer) -> int:
    """The ``pad`` of a V0 padding layer, checked (its ``padding_param`` has no schema to do it)."""
    params = layer.params.get("padding_param")
    pad = params.get("pad", 0) if isinstance(params, dict) else 0
    pad = pad[-1] if isinstance(pad, list) and pad else pad
    if isinstance(pad, float) and pad.is_integer():
        pad = int(pad)
    if not isinstance(pad, int) or isinstance(pad, bool) or not 0 <= pad < 2**32:
        raise ModelStructureError(f"V0 padding layer has pad {pad!r}, expected a uint32",
                                  path=net.prototxt_path or net.caffemodel_path, layer=layer.name)
    return pad
