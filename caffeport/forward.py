"""`run`: a numpy forward of a `Net` in Caffe's own semantics, the reference every export is verified against.

Each layer type's forward lives in its module under `caffeport.layers`
(``LayerType.forward``), restating Caffe's CPU implementation (BVLC
``src/caffe/layers/*.cpp``, the SSD fork for its layers) in float32, as Caffe
computes. This module walks the net in file order, as ``Net::Forward`` does:
in-place layers overwrite their blob, so ``all_layers`` takes each top right
after the layer that wrote it (what caffe-reference's ``outputs_per_layer.npz``
holds).

Before any work, every layer the reference cannot run is listed at once
(`unsupported_layers`); `run` refuses such a net with that list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from caffeport.errors import (
    CaffeportError,
    InputError,
    ModelStructureError,
    ShapeInferenceError,
    UnsupportedModelError,
)
from caffeport.ir import Layer, Net
from caffeport.layers import Unsupported, layer_type
from caffeport.layers.blobs import check_net
from caffeport.layers.shapes import infer_shapes
from caffeport.readers.files import model_file, naming_file

__all__ = ["net_outputs", "run", "unsupported_layers"]


def _fed(net: Net) -> set[str]:
    """Blobs the caller provides: the net's inputs (legacy ``input:`` fields and ``Input`` layers)."""
    return set(net.inputs)


def unsupported_layers(net: Net) -> list[str]:
    """One line per layer the reference cannot run (its type, or a parameter value), in file order."""
    fed = _fed(net)
    problems = []
    for layer in net.layers:
        if not layer.bottoms and layer.tops and all(top in fed for top in layer.tops):
            continue  # a source whose tops the caller gives (Input, or a Data layer standing for an input)
        reason = layer_type(layer.type).unsupported(layer)
        if reason is not None:
            problems.append(f"{layer.name!r} ({layer.type}): {reason}")
    return problems


def net_outputs(net: Net) -> list[str]:
    """The net's output blobs as Caffe finds them: tops that no later layer reads (in-place tops stay outputs)."""
    available: dict[str, None] = {}
    for layer in net.layers:
        for bottom in layer.bottoms:
            available.pop(bottom, None)
        for top in layer.tops:
            available[top] = None
    return list(available)


def _check_inputs(net: Net, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    unknown = sorted(set(inputs) - set(net.inputs))
    if unknown:
        raise InputError(f"the net has no input named {', '.join(map(repr, unknown))} "
                         f"(its inputs: {', '.join(f'{k}{list(v)}' for k, v in net.inputs.items())})")
    values = {}
    for name, shape in net.inputs.items():
        if name not in inputs:
            raise InputError(f"no value given for input {name!r} (expected shape {list(shape)})")
        value = np.asarray(inputs[name])
        if not shape:
            raise InputError(f"the shape of input {name!r} is not known (a caffemodel alone does not say it): "
                             "give the deploy prototxt")
        # other sizes are allowed, as after pycaffe's blobs[name].reshape(): `run` checks the net at them
        if value.ndim != len(shape) or value.size == 0:
            raise InputError(f"input {name!r} has shape {list(value.shape)}, expected {list(shape)}")
        if not np.issubdtype(value.dtype, np.number) and value.dtype != np.bool_:
            raise InputError(f"input {name!r} holds {value.dtype} values, not numbers")
        values[name] = np.ascontiguousarray(value, dtype=np.float32)
    return values


def _reshaped(net: Net, shapes: dict[str, tuple[int, ...]]) -> Net:
    """``net`` at the given input sizes, its shapes inferred strictly and its blobs checked again (``Net::Reshape``).

    A copy (blobs shared): the caller's net keeps its own shapes. Run at the
    net's own sizes too: `read` infers leniently (a shape rule's complaint is
    a warning, its tops unknown), but Caffe's ``Reshape`` would abort there,
    and a forward past it would compute (and allocate) what the parameters
    say: a Tile of 2^31 tiles, a padding of 2^32 - 1.
    """
    layers = [dataclasses.replace(layer, bottom_shapes=[], top_shapes=[]) for layer in net.layers]
    resized = dataclasses.replace(net, layers=layers, inputs=dict(shapes), warnings=[])
    try:
        infer_shapes(resized, strict=True)
    except ShapeInferenceError as exc:
        if all(tuple(shape) == tuple(net.inputs.get(name, ())) for name, shape in shapes.items()):
            raise
        sizes = ", ".join(f"{name} {list(shape)}" for name, shape in shapes.items())
        raise InputError(f"the net cannot run at input size {sizes}: {exc}") from exc
    check_net(resized)
    return resized


def _forward_one(layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
    kind = layer_type(layer.type)
    try:
        tops = kind.forward(layer, bottoms)
    except Unsupported as exc:
        raise UnsupportedModelError(str(exc), layer=layer.name) from exc
    except CaffeportError:
        raise
    except (ValueError, IndexError, TypeError) as exc:
        shapes = ", ".join(str(list(b.shape)) for b in bottoms)
        raise ModelStructureError(f"{layer.type} forward failed on inputs {shapes}: {type(exc).__name__}: {exc}",
                                  layer=layer.name) from exc
    if len(tops) != len(layer.tops):
        raise ModelStructureError(f"{layer.type} computed {len(tops)} tops for its {len(layer.tops)} "
                                  f"({', '.join(layer.tops)})", layer=layer.name)
    return [np.asarray(top, dtype=np.float32) for top in tops]


def run(net: Net, inputs: Mapping[str, np.ndarray], *, all_layers: bool = False) -> dict[str, np.ndarray]:
    """Run ``net`` forward on ``inputs`` (net input name -> array in Caffe's layout, NCHW) in Caffe's semantics.

    Returns the net's output blobs by name (`net_outputs`); with ``all_layers``
    also ``"<layer>/<top>"`` for every top of every layer, taken right after
    that layer ran. Raises `UnsupportedModelError` listing every layer the
    reference cannot run, `InputError` for a missing or misshapen input, and
    the blob checks' `ModelStructureError` when weights do not fit their layers.
    """
    with naming_file(model_file(net)):  # a layer's complaint names the layer; the one line must name the file too
        return _run(net, inputs, all_layers)


def _run(net: Net, inputs: Mapping[str, np.ndarray], all_layers: bool) -> dict[str, np.ndarray]:
    check_net(net)
    problems = unsupported_layers(net)
    if problems:
        raise UnsupportedModelError(
            f"the reference forward cannot run {len(problems)} layer(s): " + "; ".join(problems))
    blobs = _check_inputs(net, inputs)
    _reshaped(net, {name: tuple(value.shape) for name, value in blobs.items()})
    fed = set(blobs)
    results: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):  # Caffe computes through overflow and NaN without a word; so does this
        for layer in net.layers:
            if not layer.bottoms and layer.tops and all(top in fed for top in layer.tops):
                tops = [blobs[top] for top in layer.tops]
            else:
                missing = [b for b in layer.bottoms if b not in blobs]
                if missing:
                    raise ModelStructureError(f"bottom {', '.join(map(repr, missing))} is produced by no earlier "
                                              "layer and is not a net input", layer=layer.name)
                tops = _forward_one(layer, [blobs[b] for b in layer.bottoms])
            for name, value in zip(layer.tops, tops, strict=True):
                blobs[name] = value
                if all_layers:
                    results[f"{layer.name}/{name}"] = value
    outputs = {name: blobs[name] for name in net_outputs(net) if name in blobs}
    return {**outputs, **results}
