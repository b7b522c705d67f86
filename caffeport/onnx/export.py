"""`to_onnx`: a Caffe `Net` as an ONNX model, every Caffe top a named tensor; `write_onnx` writes it.

Tensor names, so that anyone can compare the model with ``caffeport run
--all-layers`` (whose keys are ``<layer>/<top>``, each top taken right after
its layer ran):

- graph inputs are the Caffe inputs (shapes from the prototxt; with
  ``dynamic_batch`` axis 0 is the symbolic ``N``);
- a top written by one layer is named after the top;
- a top written in place by several layers (conv -> BatchNorm -> Scale ->
  ReLU all on ``conv1``) needs one name per value (ONNX graphs are SSA): the
  LAST writer's value is ``<top>``, every earlier one ``<layer>/<top>``
  (``conv1/conv1``, ``bn1/conv1``, ...). A net input rewritten in place keeps
  its name for the input, so all its writers get ``<layer>/<top>``;
- graph outputs are the net's outputs (`caffeport.forward.net_outputs`);
- the model's ``metadata_props`` key ``caffeport.tensors`` holds the JSON
  map from every ``<layer>/<top>`` key of ``run --all-layers`` to its ONNX
  tensor name, which is what ``caffeport verify`` pairs by; a clash with a
  name already taken adds ``_1``, ``_2``, ... and the map says so.

Every named top carries a ``value_info`` with caffeport's inferred shape, so
``onnx.checker.check_model(full_check=True)`` (run on every export) also
checks that ONNX's shape inference agrees with Caffe's shape rules.

Layers whose tops are constants of the net (PriorBox, whose top depends on
its bottoms' shapes alone, and every layer reading only constants) are not
lowered but folded: the reference's own forward computes their tops at
export, written as initializers (each still a named tensor, through an
``Identity``), and a lowering that needs such values (DetectionOutput's
priors) gets them in its `Context`. With ``ssd_heads`` the DetectionOutput
layers are left out and their bottoms are the graph's first outputs.

Before any node is built, every layer that cannot be lowered exactly is
listed at once by name (the reference's own refusals,
the rule of
`caffeport.forward.unsupported_layers`, and each lowering's), and the net is
refused as a whole.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from caffeport import __version__
from caffeport.errors import CaffeportError, ModelStructureError, UnsupportedModelError
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net
from caffeport.layers import layer_type
from caffeport.layers.blobs import check_net
from caffeport.onnx.graph import MIN_OPSET, TENSOR_MAP_KEY, GraphBuilder
from caffeport.onnx.preprocessing import Preprocessing, apply_preprocessing
from caffeport.onnx.proto import (
    FLOAT,
    Graph,
    Model,
    ValueInfo,
    make_node,
    require_onnx_installed,
    to_model_proto,
)
from caffeport.streaming.blocks import Blob

#: the opset written unless another is asked for: onnxruntime 1.17+ and OpenCV 5's importer both run it
DEFAULT_OPSET = 17
#: the metadata_props key of the ``ssd_heads`` export's map: DetectionOutput layer -> its outputs and parameters
SSD_HEADS_KEY = "caffeport.ssd_heads"
#: protobuf cannot serialize a message of 2 GiB or more
MAX_PROTO_BYTES = 2**31 - 1
#: the symbolic batch dimension with ``dynamic_batch``
BATCH = "N"

#: opset -> (the first onnx release that has it, the IR version that goes with it: onnx.helper.VERSION_TABLE),
#: so that older runtimes accept the file and no opset newer than the installed onnx's is written
IR_VERSIONS: dict[int, tuple[tuple[int, int], int]] = {
    13: ((1, 8), 7), 14: ((1, 9), 7), 15: ((1, 10), 8), 16: ((1, 11), 8), 17: ((1, 12), 8), 18: ((1, 13), 8),
    19: ((1, 14), 9), 20: ((1, 15), 9), 21: ((1, 16), 10), 22: ((1, 17), 10), 23: ((1, 18), 11),
    24: ((1, 19), 12), 25: ((1, 20), 13), 26: ((1, 21), 13), 27: ((1, 22), 13), 28: ((1, 23), 14),
}


def _fed(net: Net, layer: Layer) -> bool:
    """A source layer whose tops the caller gives (Input, or a Data layer standing for an input)."""
    return not layer.bottoms and bool(layer.tops) and all(top in net.inputs for top in layer.tops)


def _constants(net: Net) -> tuple[set[int], list[list[bool]]]:
    """The layers folded to constants (see `caffeport.onnx.lowerings.registry`), and per layer which bottoms are
    constants when it runs (in-place writers followed: a top rewritten from the inputs is no constant any more)."""
    from caffeport.onnx.lowerings import LOWERINGS

    constant: set[str] = set()
    folded: set[int] = set()
    bottoms: list[list[bool]] = []
    for i, layer in enumerate(net.layers):
        bottoms.append([b in constant for b in layer.bottoms])
        lowering = LOWERINGS.get(layer.type)
        if _fed(net, layer) or lowering is None:
            constant.difference_update(layer.tops)
        elif lowering.shape_only or (lowering.foldable and layer.bottoms and all(bottoms[-1])):
            folded.add(i)
            constant.update(layer.tops)
        else:
            constant.difference_update(layer.tops)
    return folded, bottoms


def refusals(net: Net, dynamic_batch: bool = False) -> list[str]:
    """One line per layer that cannot be lowered exactly, in file order (empty: the net can be exported).

    A layer the reference cannot run (`caffeport.forward.unsupported_layers`'
    rule) is refused too: an export is only as exact as what it is verified against.
    """
    from caffeport.onnx.lowerings import LOWERINGS

    folded, constant_bottoms = _constants(net)
    problems = []
    for i, layer in enumerate(net.layers):
        if "" in (*layer.bottoms, *layer.tops):
            # ONNX spells an absent optional input "": a tensor cannot take that name, and renaming it would
            # break the pairing with `caffeport run --all-layers`, whose keys are Caffe's own names
            problems.append(f"{layer.name!r} ({layer.type}): a blob has the empty name, which ONNX reserves for an "
                            "absent input; name it in the prototxt")
            continue
        if _fed(net, layer):
            continue
        lowering = LOWERINGS.get(layer.type)
        reason = layer_type(layer.type).unsupported(layer)
        dynamic_tops = lowering is not None and lowering.top_shapes(layer) is not None
        if reason is not None:
            pass
        elif lowering is None:
            reason = f"layer type {layer.type!r} has no ONNX lowering"
        elif any(shape is None for shape in layer.bottom_shapes) or len(layer.bottom_shapes) < len(layer.bottoms) \
                or (not dynamic_tops and (any(shape is None for shape in layer.top_shapes)
                                          or len(layer.top_shapes) < len(layer.tops))):
            reason = "its shapes are not known (give the deploy prototxt with the input shapes)"
        elif i in folded:
            pass  # computed by the reference's forward at export: nothing to lower
        else:
            reason = lowering.refuse(layer, dynamic_batch)
            if reason is None:
                computed = [layer.bottoms[k] for k in lowering.constant_bottoms
                            if k < len(layer.bottoms) and not constant_bottoms[i][k]]
                if computed:
                    reason = (f"bottom {', '.join(map(repr, computed))} must be a constant of the net (PriorBox "
                              "priors), not computed from its inputs")
        if reason is not None:
            problems.append(f"{layer.name!r} ({layer.type}): {reason}")
    return problems


def _fold(layer: Layer, bottoms: list[np.ndarray]) -> list[np.ndarray]:
    """A folded layer's tops, computed by the reference's own forward (so exact by construction)."""
    with np.errstate(all="ignore"):  # as caffeport.run: Caffe computes through overflow without a word
        tops = layer_type(layer.type).forward(layer, bottoms)
    return [np.asarray(top, dtype=np.float32) for top in tops]


def ssd_heads_net(net: Net) -> tuple[Net, list[Layer]]:
    """``net`` without its DetectionOutput layers, and those layers (whose bottoms become the graph's outputs)."""
    heads = [layer for layer in net.layers if layer.type == "DetectionOutput"]
    where = net.prototxt_path or net.caffemodel_path
    if not heads:
        raise UnsupportedModelError("ssd_heads (--ssd-heads): the net has no DetectionOutput layer", path=where)
    detections = {top for layer in heads for top in layer.tops}
    readers = [layer.name for layer in net.layers if layer.type != "DetectionOutput"
               and any(b in detections for b in layer.bottoms)]
    if readers:
        raise UnsupportedModelError(f"ssd_heads (--ssd-heads): layer(s) {', '.join(map(repr, readers))} read the "
                                    "detections, which are not computed then", path=where)
    return dataclasses.replace(net, layers=[layer for layer in net.layers if layer.type != "DetectionOutput"]), heads


def _tensor_names(net: Net, graph: GraphBuilder) -> list[list[str]]:
    """The ONNX name of every layer's every top (see the module docstring), reserved in ``graph``."""
    last_writer: dict[str, int] = {}
    for i, layer in enumerate(net.layers):
        if not _fed(net, layer):
            for top in layer.tops:
                last_writer[top] = i
    names: list[list[str]] = []
    for i, layer in enumerate(net.layers):
        if _fed(net, layer):
            names.append(list(layer.tops))
            continue
        names.append([top if last_writer[top] == i and top not in net.inputs else f"{layer.name}/{top}"
                      for top in layer.tops])
    # the final names first, so that no earlier writer's `<layer>/<top>` takes one of them
    for i, layer in enumerate(net.layers):
        if not _fed(net, layer):
            names[i] = [graph.reserve(name) if name in layer.tops else name for name in names[i]]
    for i, layer in enumerate(net.layers):
        if not _fed(net, layer):
            names[i] = [name if name in layer.tops else graph.reserve(name) for name in names[i]]
    return names


def _value_info(name: str, shape: tuple[int, ...], dynamic_batch: bool, input_batch: bool = False) -> ValueInfo:
    """A float tensor's ValueInfo; with ``dynamic_batch`` axis 0 is ``N`` (inputs) or left unknown (the rest)."""
    dims: list[int | str | None] = [None if d is None else int(d) for d in shape]
    if dynamic_batch and dims:
        dims[0] = BATCH if input_batch else None
    return ValueInfo(name, FLOAT, dims)


def newest_opset() -> int:
    """The newest opset the installed onnx knows (its release read from the package metadata: onnx is not
    imported), at most the newest of `IR_VERSIONS`; without onnx installed, that newest."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = tuple(int(part) for part in version("onnx").split(".")[:2] if part.isdigit())
    except PackageNotFoundError:
        installed = (999,)
    known = [opset for opset, (release, _ir) in IR_VERSIONS.items() if release <= installed]
    return max(known, default=MIN_OPSET)


def build(net: Net, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, ssd_heads: bool = False,
          preprocessing: Preprocessing | None = None) -> tuple[Model, dict[str, Blob]]:
    """``net`` as caffeport's ONNX model records (`caffeport.onnx.proto`; no onnx import) and its lazy weights.

    The weights' initializers keep dims and type only; the dict maps their
    names to the weight views (`caffeport.onnx.graph.GraphBuilder.weight`),
    which `write_onnx` streams into the file and `to_onnx` copies in.
    ``preprocessing``: recorded in ``metadata_props``, or baked in as the
    graph's first nodes (`caffeport.onnx.preprocessing`). ``ssd_heads``: the
    DetectionOutput layers are left out and their bottoms (loc, conf, priors)
    are graph outputs, for users who post-process the raw heads themselves;
    ``metadata_props`` key ``caffeport.ssd_heads`` maps each left-out layer
    to those tensors and its ``detection_output_param``.

    Raises `UnsupportedModelError` listing every layer without an exact
    lowering, `ModelStructureError` when weights do not fit their layers.
    """
    from caffeport.onnx.lowerings import LOWERINGS, Context

    newest = newest_opset()
    if not MIN_OPSET <= opset <= newest:
        raise CaffeportError(f"opset {opset} is not supported: choose {MIN_OPSET} to {newest} "
                             f"(default {DEFAULT_OPSET})")
    check_net(net)
    where = net.prototxt_path or net.caffemodel_path
    heads: list[Layer] = []
    if ssd_heads:
        net, heads = ssd_heads_net(net)
    if not net.inputs or any(not shape for shape in net.inputs.values()):
        raise UnsupportedModelError("ONNX export needs the net's input shapes: give the deploy prototxt", path=where)
    problems = refusals(net, dynamic_batch)
    if problems:
        raise UnsupportedModelError(f"ONNX export cannot lower {len(problems)} layer(s) exactly: "
                                    + "; ".join(problems), path=where)
    graph = GraphBuilder(opset)
    for name in net.inputs:
        graph.reserve(name)
    names = _tensor_names(net, graph)
    folded, _ = _constants(net)
    current = {name: name for name in net.inputs}
    #: Caffe top -> its value, while it is a constant of the net (see `_constants`)
    constant_values: dict[str, np.ndarray] = {}
    tensor_map: dict[str, str] = {}
    value_infos: dict[str, ValueInfo] = {}
    for index, (layer, top_names) in enumerate(zip(net.layers, names, strict=True)):
        if _fed(net, layer):
            for top in layer.tops:
                tensor_map[f"{layer.name}/{top}"] = top
                constant_values.pop(top, None)
            continue
        missing = [b for b in layer.bottoms if b not in current]
        if missing:
            raise ModelStructureError(f"bottom {', '.join(map(repr, missing))} is produced by no earlier layer and "
                                      "is not a net input", layer=layer.name)
        first_node = len(graph.nodes)
        graph.scope = layer.name
        lowering = LOWERINGS[layer.type]
        if index in folded:
            values = _fold(layer, [constant_values[b] if b in constant_values else
                                   np.zeros(shape, np.float32)  # a shape_only bottom: its values are never read
                                   for b, shape in zip(layer.bottoms, layer.bottom_shapes, strict=True)])
            outputs = [graph.const(value, f"{top}/constant") for top, value in zip(layer.tops, values, strict=True)]
        else:
            ctx = Context(graph, layer, [current[b] for b in layer.bottoms], list(layer.bottom_shapes),  # type: ignore
                          list(layer.top_shapes), dynamic_batch,  # type: ignore[arg-type]
                          [constant_values.get(b) for b in layer.bottoms])
            outputs = lowering.lower(ctx)
        dynamic_shapes = lowering.top_shapes(layer)
        top_shapes = dynamic_shapes if dynamic_shapes is not None else layer.top_shapes
        if len(outputs) != len(layer.tops):
            raise AssertionError(f"the {layer.type} lowering gave {len(outputs)} tensors for {len(layer.tops)} tops")
        produced = {out for node in graph.nodes[first_node:] for out in node.output}
        renamed: dict[str, str] = {}
        for i, (top, out, want, shape) in enumerate(zip(layer.tops, outputs, top_names, top_shapes, strict=True)):
            if index in folded:
                constant_values[top] = values[i]
            else:
                constant_values.pop(top, None)
            if out in produced and out not in renamed:
                renamed[out] = want
            else:  # a bottom passed through, a constant, or a tensor already given another top's name
                graph.nodes.append(make_node("Identity", [renamed.get(out, out)], [want],
                                             name=graph.fresh("identity")))
            current[top] = want
            tensor_map[f"{layer.name}/{top}"] = want
            value_infos[want] = _value_info(want, tuple(shape), dynamic_batch)  # type: ignore[arg-type]
        for node in graph.nodes[first_node:]:
            node.input[:] = [renamed.get(name, name) for name in node.input]
            node.output[:] = [renamed.get(name, name) for name in node.output]
        graph.scope = ""
    inputs = [_value_info(name, tuple(shape), dynamic_batch, input_batch=True)
              for name, shape in net.inputs.items()]
    outputs = []
    head_bottoms = [bottom for layer in heads for bottom in layer.bottoms]
    for top in dict.fromkeys([*head_bottoms, *net_outputs(net)]):  # the heads in loc, conf, priors order
        name = current.get(top)
        if name is None or name in net.inputs:
            continue  # an input no layer reads: nothing computed to give back
        if name in value_infos:  # (a top listed twice has been taken)
            outputs.append(value_infos.pop(name))
    model_graph = Graph(net.name or "caffeport", graph.nodes, graph.initializers, inputs, outputs,
                        list(value_infos.values()))
    model = Model(model_graph, ir_version=IR_VERSIONS[opset][1], opset=opset, producer_version=__version__,
                  doc_string=f"converted by caffeport {__version__} from {net.caffemodel_path or '-'} "
                             f"(prototxt {net.prototxt_path or '-'})")
    props = {TENSOR_MAP_KEY: json.dumps(tensor_map, sort_keys=True),
             "caffeport.source": json.dumps({"caffemodel": net.caffemodel_path, "prototxt": net.prototxt_path,
                                             "format": net.source_format, "name": net.name})}
    if heads:
        props[SSD_HEADS_KEY] = json.dumps({layer.name: {
            "loc": current[layer.bottoms[0]], "conf": current[layer.bottoms[1]],
            "priors": current[layer.bottoms[2]] if len(layer.bottoms) > 2 else None,
            "detection_output_param": layer.param("detection_output_param")} for layer in heads},
            sort_keys=True, default=str)
    model.set_props(props)
    if preprocessing is not None:
        apply_preprocessing(model, net, preprocessing)
    return model, graph.lazy


def to_onnx(net: Net, *, opset: int = DEFAULT_OPSET, dynamic_batch: bool = False, ssd_heads: bool = False,
            preprocessing: Preprocessing | None = None) -> Any:
    """``net`` as an ``onnx.ModelProto`` holding every weight, checked with ``onnx.checker`` (``full_check``).

    `build`'s model with its weights copied in and parsed by onnx; the arguments are `build`'s. The model must
    stay below protobuf's 2 GiB: `write_onnx` writes any size, streaming the weights.
    """
    from caffeport.onnx.stream import fill, run_checker, single_file_size

    model, lazy = build(net, opset=opset, dynamic_batch=dynamic_batch, ssd_heads=ssd_heads,
                        preprocessing=preprocessing)
    size = single_file_size(model, lazy)
    if size > MAX_PROTO_BYTES:
        raise UnsupportedModelError(f"the ONNX model would be {size / 2**30:.2f} GiB, and one ModelProto holds less "
                                    "than 2 GiB: write it with write_onnx (caffeport convert -f onnx), which adds "
                                    "an external data file", path=net.prototxt_path or net.caffemodel_path)
    fill(model, lazy)
    proto = to_model_proto(model)
    run_checker(proto)
    return proto


def write_onnx(net: Net, path: str | os.PathLike[str], *, opset: int = DEFAULT_OPSET,
               dynamic_batch: bool = False, ssd_heads: bool = False, external_data: bool | None = None,
               final_path: str | os.PathLike[str] | None = None, force: bool = False,
               progress: Callable[[int, int, int, int], None] | None = None,
               preprocessing: Preprocessing | None = None) -> Path | None:
    """Write ``net`` as ONNX to ``path``, the weights streamed from the model file; the external data file, if any.

    The exporter hands a temporary ``path`` that `convert` renames to
    ``final_path``. Memory stays bounded at any model size (see
    `caffeport.onnx.stream`): one self-contained file below 2 GiB, else (or
    with ``external_data=True``) the model file and ``<final name>.data``
    beside it, published together. ``progress`` is called with (bytes done,
    bytes total, weights done, weights total).
    """
    from caffeport.onnx.stream import write

    require_onnx_installed()  # for the checker
    model, lazy = build(net, opset=opset, dynamic_batch=dynamic_batch, ssd_heads=ssd_heads,
                        preprocessing=preprocessing)
    return write(model, lazy, path, external_data=external_data, final_path=final_path, force=force,
                 inputs=[net.caffemodel_path, net.prototxt_path], progress=progress)
