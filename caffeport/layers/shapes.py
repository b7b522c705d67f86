"""Static shape inference over a `Net`, restating Caffe's own ``Reshape`` rules.

Exporters need every blob's shape before any data flows (an InnerProduct after
a convolution flattens C*H*W, a Keras model needs its input sizes), and a
converted model is only trustworthy if the shapes we compute are the ones Caffe
would. Each layer type's rule lives in its module under `caffeport.layers`
(``LayerType.infer``), restating that type's ``Reshape`` arithmetic from BVLC
Caffe (the SSD fork for Permute, PriorBox, Normalize), rounding quirks
included, and raising `ShapeInferenceError` where Caffe would abort on a
``CHECK``. This module only walks the net.

A type without a rule (Python layers, exotic forks) gets unknown (``None``)
top shapes; only its consumers become unknown, and `unknown_shape_warnings`
names the layer that made them so.
"""

from __future__ import annotations

import math

from caffeport.errors import ModelStructureError, ShapeInferenceError
from caffeport.ir import Layer, Net, Shape
from caffeport.layers import LayerType, Tops, layer_type

__all__ = ["infer_shapes"]


def infer_shapes(net: Net, *, strict: bool = False) -> Net:
    """Fill ``bottom_shapes``/``top_shapes`` of every layer in place and return ``net``.

    Layers are walked in file order (Caffe's own order, so every bottom is
    produced before it is used), tracking blob name -> current shape; in-place
    layers simply overwrite their blob's entry. ``net.inputs`` seeds the map and
    also wins over what a source layer (one without bottoms, e.g. ``Input``)
    declares, so a caller can change the batch or image size by editing
    ``net.inputs`` alone.

    A rule that finds the inputs inconsistent raises `ShapeInferenceError`; with
    ``strict=False`` (the default) the message goes to ``net.warnings`` instead
    and that layer's tops become unknown, because a partly shaped net is still
    useful to inspect and export.
    """
    inputs = check_input_shapes(net)
    known = dict(inputs)
    for layer in net.layers:
        layer.bottom_shapes = [known.get(name) for name in layer.bottoms]
        try:
            tops = _run_rule(layer)
        except ShapeInferenceError as error:
            if strict:
                raise
            net.warnings.append(f"layer {layer.name!r}: {error.message}")
            tops = [None] * len(layer.tops)
        if not layer.bottoms:
            tops = [inputs.get(name, shape) for name, shape in zip(layer.tops, tops, strict=True)]
        layer.top_shapes = tops
        for name, shape in zip(layer.tops, tops, strict=True):
            if shape is None:
                known.pop(name, None)
            else:
                known[name] = shape
    return net


#: Caffe's limit on a blob's element count (``Blob::Reshape`` CHECKs ``count_ <= INT_MAX``)
MAX_BLOB_COUNT = 2**31 - 1


def check_input_shapes(net: Net) -> dict[str, Shape]:
    """The net's input shapes, refusing zero, negative and absurd dims (`ModelStructureError` naming the input).

    A legacy ``input`` without dims (what pycaffe's ``net.save`` writes into a
    caffemodel) is an input of unknown shape: it is left out.
    """
    known: dict[str, Shape] = {}
    for name, shape in net.inputs.items():
        dims = tuple(int(d) for d in shape)
        if not dims:
            continue
        if any(d <= 0 for d in dims):
            raise ModelStructureError(f"net input {name!r} has shape {list(dims)}: every dim must be positive",
                                      path=net.prototxt_path or net.caffemodel_path)
        if math.prod(dims) > MAX_BLOB_COUNT:
            raise ModelStructureError(f"net input {name!r} has shape {list(dims)}: {math.prod(dims):,} values, more "
                                      f"than the {MAX_BLOB_COUNT:,} Caffe allows in a blob",
                                      path=net.prototxt_path or net.caffemodel_path)
        known[name] = dims
    return known


def _run_rule(layer: Layer) -> Tops:
    """The layer's top shapes from its type's rule, padded with ``None`` to one per top."""
    unknown: Tops = [None] * len(layer.tops)
    kind = layer_type(layer.type)
    if type(kind).infer is LayerType.infer:
        return unknown
    declared = kind.bottoms
    needed = len(layer.bottoms) if declared is None else declared
    minimum = 1 if declared is None else declared
    if len(layer.bottoms) < minimum:
        raise ShapeInferenceError(f"{layer.type} needs at least {minimum} bottom(s), got {len(layer.bottoms)}",
                                  layer=layer.name)
    shapes = [shape for shape in layer.bottom_shapes[:needed] if shape is not None]
    if len(shapes) < needed:
        return unknown
    try:
        tops = kind.infer(layer, shapes) or []
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError) as exc:
        # A hand-written or forked prototxt can hold anything; report it like any
        # other bad input rather than crash the whole run with a traceback.
        raise ShapeInferenceError(f"cannot read {layer.type} parameters ({type(exc).__name__}: {exc})",
                                  layer=layer.name) from exc
    tops = (list(tops) + unknown)[: len(layer.tops)]
    for name, shape in zip(layer.tops, tops, strict=True):
        if shape is not None:
            _check_blob_shape(layer, name, shape)
    return tops


def _check_blob_shape(layer: Layer, top: str, shape: Shape) -> None:
    """Caffe's ``Blob::Reshape`` CHECKs, made once here for every top of every layer.

    Every Caffe blob has dims >= 0 and at most `MAX_BLOB_COUNT` values; a
    shape rule fed absurd parameters (a Tile of 2^31 tiles, a padding of
    2^32 - 1) computes a top Caffe would abort on, and everything after it
    (the forward's allocation, a consumer's rule) would believe it.
    """
    if any(d < 0 for d in shape):
        raise ShapeInferenceError(f"top {top!r} would have shape {list(shape)}: a negative dimension",
                                  layer=layer.name)
    count = math.prod(shape)
    if count > MAX_BLOB_COUNT:
        raise ShapeInferenceError(f"top {top!r} would have shape {list(shape)}: {count:,} values, more than the "
                                  f"{MAX_BLOB_COUNT:,} Caffe allows in a blob", layer=layer.name)


def unknown_shape_cause(net: Net, layer: Layer, bottom: int = 0) -> str:
    """Why bottom ``bottom`` of ``layer`` has no known shape: the layer where knowledge stopped, and why.

    Walks back through producers whose own inputs are unknown to the first one
    whose inputs were known (its type has no shape rule, or its rule failed)
    or to a blob nobody produces.
    """
    if bottom >= len(layer.bottoms):
        return f"layer {layer.name!r} has no bottom {bottom}"
    index = next(i for i, candidate in enumerate(net.layers) if candidate is layer)
    blob = layer.bottoms[bottom]
    while True:
        index, producer = next(((i, la) for i, la in zip(range(index - 1, -1, -1), reversed(net.layers[:index]))
                                if blob in la.tops), (0, None))
        if producer is None:
            if blob in net.inputs:
                return f"the shape of net input {blob!r} is not known (give the deploy prototxt)"
            return f"blob {blob!r} comes from no layer and is not a net input with a known shape"
        unknown = [i for i, shape in enumerate(producer.bottom_shapes) if shape is None]
        if unknown:
            blob = producer.bottoms[unknown[0]]
            continue
        kind = layer_type(producer.type)
        if type(kind).infer is LayerType.infer:
            return f"layer {producer.name!r} is of type {producer.type!r}, which has no shape rule in caffeport"
        if not producer.bottoms:
            return f"layer {producer.name!r} ({producer.type}) reads its data from files at run time"
        return f"layer {producer.name!r} ({producer.type}) could not be shaped (see its warning)"
