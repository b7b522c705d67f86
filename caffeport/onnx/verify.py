"""``caffeport verify``: an exported ONNX model run by onnxruntime beside `caffeport.run`, compared tensor by tensor.

The pairs come from the model's ``caffeport.tensors`` metadata (written by
`caffeport.onnx.export`: ``<layer>/<top>`` -> ONNX tensor name); for an ONNX
file without it, the export's naming rule is assumed (a top is named after
itself when its last writer wrote it, ``<layer>/<top>`` otherwise). Without
``all_layers`` the net's outputs are compared; with it, every paired tensor,
fetched from onnxruntime by making it a graph output of a copy of the model.
A model whose preprocessing is baked in (`caffeport.onnx.preprocessing`) is
fed the raw images, and the reference the same images preprocessed as
``--mean``/``--scale``/``--swap-rb`` say: a model baked with other values fails.

The comparison, the table and the first divergence are target-neutral
(`caffeport.verify`, re-exported here: `Comparison`, `table`, `RTOL`); this
module only runs the ONNX model and pairs its tensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from caffeport.errors import CaffeportError, InputError
from caffeport.forward import run
from caffeport.ir import Net
from caffeport.onnx.graph import TENSOR_MAP_KEY, require_onnx
from caffeport.onnx.preprocessing import onnx_feeds
from caffeport.verify import RTOL, Comparison, compare, comparison, layer_tops, table

__all__ = ["RTOL", "Comparison", "compare", "load_model", "run_onnx", "table", "tensor_pairs", "verify"]


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise CaffeportError("caffeport verify needs onnxruntime: pip install 'caffeport[onnx]'") from exc
    return onnxruntime


def load_model(path: str | os.PathLike[str]) -> Any:
    """The ONNX model at ``path``; a file that is not one is a one-line error naming it."""
    onnx = require_onnx()
    try:
        return onnx.load(os.fspath(path))
    except FileNotFoundError as exc:
        raise CaffeportError("no such file", path=path) from exc
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise CaffeportError(f"not an ONNX model ({type(exc).__name__}: {exc})", path=path) from exc


def tensor_pairs(model: Any, net: Net) -> dict[str, str]:
    """``<layer>/<top>`` -> ONNX tensor name: the model's metadata, else the export's naming rule."""
    for prop in model.metadata_props:
        if prop.key == TENSOR_MAP_KEY:
            try:
                pairs = json.loads(prop.value)
            except ValueError as exc:
                raise CaffeportError(f"the model's {TENSOR_MAP_KEY} metadata is not JSON: {exc}") from exc
            if not isinstance(pairs, dict) or not all(isinstance(v, str) for v in pairs.values()):
                raise CaffeportError(f"the model's {TENSOR_MAP_KEY} metadata is not a map of tensor names")
            return pairs
    last: dict[str, str] = {}
    for layer in net.layers:
        for top in layer.tops:
            last[top] = layer.name
    return {f"{layer.name}/{top}": top if last[top] == layer.name else f"{layer.name}/{top}"
            for layer in net.layers for top in layer.tops}


def run_onnx(model: Any, inputs: Mapping[str, np.ndarray], tensors: list[str]) -> dict[str, np.ndarray]:
    """``tensors`` computed by onnxruntime on ``inputs`` (intermediate ones made graph outputs of a copy)."""
    onnx = require_onnx()
    ort = _onnxruntime()
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    known = {info.name: info for info in [*graph.value_info, *graph.output]}
    outputs = {info.name for info in graph.output}
    produced = {name for node in graph.node for name in node.output}
    for name in tensors:
        if name not in outputs and name in produced:
            graph.output.append(known[name] if name in known else onnx.ValueInfoProto(name=name))
            outputs.add(name)
    feeds = {info.name for info in graph.input} - {init.name for init in graph.initializer}
    unknown = sorted(set(inputs) - feeds)
    missing = sorted(feeds - set(inputs))
    if unknown or missing:
        raise InputError(f"the ONNX model's inputs are {', '.join(sorted(feeds))}; "
                         f"the net's: {', '.join(sorted(inputs))}")
    try:
        session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
        wanted = [name for name in tensors if name in outputs]
        values = session.run(wanted, {name: np.ascontiguousarray(inputs[name], np.float32) for name in feeds})
    except Exception as exc:  # onnxruntime's own errors (a wrong input size, a model it cannot load)
        raise CaffeportError(f"onnxruntime failed: {type(exc).__name__}: {exc}") from exc
    return dict(zip(wanted, (np.asarray(v) for v in values), strict=True))


def verify(net: Net, model: Any, inputs: Mapping[str, np.ndarray], *, all_layers: bool = False,
           rtol: float = RTOL, raw_images: Mapping[str, np.ndarray] | None = None) -> list[Comparison]:
    """Compare ``model`` (an ONNX ModelProto) run by onnxruntime with ``caffeport.run(net)`` on ``inputs``.

    ``raw_images``: the ``--image`` inputs before mean, scale and swap; an input whose preprocessing the
    model has baked in (its ``caffeport.preprocessing`` metadata) is fed that, the reference ``inputs``.
    """
    feeds = onnx_feeds(model, inputs, raw_images)
    pairs = tensor_pairs(model, net)
    reference = run(net, inputs, all_layers=True)
    output_names = {info.name for info in model.graph.output}
    graph_inputs = {info.name for info in model.graph.input}
    chosen = [(key, pairs[key]) for key in reference if "/" in key and key in pairs
              and pairs[key] not in graph_inputs and (all_layers or pairs[key] in output_names)]
    if not chosen:
        raise CaffeportError("no tensor of the ONNX model pairs with a Caffe top: is it this net's export?")
    got = run_onnx(model, feeds, list(dict.fromkeys(tensor for _, tensor in chosen)))
    layers = {key: layer for key, layer, _ in layer_tops(net)}
    return [comparison(key, tensor, reference[key], got.get(tensor), rtol, output=tensor in output_names,
                       layer=layers.get(key)) for key, tensor in chosen]
