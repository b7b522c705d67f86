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

External data (``caffeport convert --external-data``, or any model above
2 GiB: ``model.onnx`` + ``model.onnx.data``): `load_model` reads the ``.onnx``
with ``load_external_data=False``, so the ModelProto keeps every large weight
as a reference (``data_location = EXTERNAL``, ``location``, ``offset``,
``length``) and Python never holds the weights' values. `run_onnx` serializes
that small proto (the outputs added) and hands onnxruntime the folder the
``location`` entries are relative to through the session config entry
``session.model_external_initializers_file_folder_path`` (onnxruntime reads,
or memory-maps, the data file itself). That was chosen over writing the
modified model into a scratch folder with the data file(s) symlinked beside
it: nothing is written anywhere (no scratch folder to clean, no symlink or
hard-link permission to need, nothing near the user's files), and the data
is read once, by onnxruntime. The entry is honoured by onnxruntime 1.32 (the
pinned version; an older one that ignores it fails in the session with
"External data path does not exist", reported as ``onnxruntime failed``).
Before onnxruntime runs, every external tensor is checked: its ``location``
relative and inside the model's folder, the file there and long enough; a
missing or short data file is a one-line `CaffeportError` naming it.

The comparison, the table and the first divergence are target-neutral
(`caffeport.verify`, re-exported here: `Comparison`, `table`, `RTOL`); this
module only runs the ONNX model and pairs its tensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from caffeport.errors import CaffeportError, InputError
from caffeport.forward import run
from caffeport.ir import Net
from caffeport.onnx.graph import TENSOR_MAP_KEY
from caffeport.onnx.preprocessing import onnx_feeds
from caffeport.onnx.proto import require_onnx
from caffeport.verify import RTOL, Comparison, compare, comparison, layer_tops, table

__all__ = ["RTOL", "Comparison", "compare", "external_data_files", "load_model", "run_onnx", "table", "tensor_pairs",
           "verify"]

#: the onnxruntime session config entry: the folder external data is found in for a model loaded from bytes
EXTERNAL_FOLDER_KEY = "session.model_external_initializers_file_folder_path"
#: protobuf cannot serialize a message of 2 GiB or more
MAX_PROTO_BYTES = 2**31 - 1


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise CaffeportError("caffeport verify needs onnxruntime: pip install 'caffeport[onnx]'") from exc
    return onnxruntime


def load_model(path: str | os.PathLike[str]) -> Any:
    """The ONNX model at ``path``, its external data not read; a file that is not one is a one-line error naming it.

    The weights in an external data file stay there (``load_external_data=False``): give `verify` or
    `run_onnx` ``base_dir=`` the folder of ``path`` (the CLI does). The data files are checked here
    already (`external_data_files`), so a missing one is reported before any work is done.
    """
    onnx = require_onnx()
    try:
        model = onnx.load(os.fspath(path), load_external_data=False)
    except FileNotFoundError as exc:
        raise CaffeportError("no such file", path=path) from exc
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not an ONNX model
        raise CaffeportError(f"not an ONNX model ({type(exc).__name__}: {exc})", path=path) from exc
    external_data_files(model, os.path.dirname(os.path.abspath(path)))
    return model


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, sparse ones, node attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _external(model: Any) -> list[Any]:
    onnx = require_onnx()
    return [t for t in _tensors(model.graph) if t.data_location == onnx.TensorProto.EXTERNAL]


def external_data_files(model: Any, base_dir: str | os.PathLike[str] | None) -> dict[str, list[str]]:
    """The external data files ``model``'s tensors name (absolute path -> tensor names); none: ``{}``.

    Checked without reading them: every ``location`` is relative and stays inside ``base_dir`` (the
    folder of the ``.onnx``), the file is there, and it is long enough for each tensor's ``offset``
    and ``length``. Each failure is a one-line `CaffeportError` naming the file.
    """
    external = _external(model)
    if not external:
        return {}
    if base_dir is None:
        which = f"{external[0].name!r}" + (f" and {len(external) - 1} more" if len(external) > 1 else "")
        raise CaffeportError(f"the ONNX model keeps tensor {which} in external data: give base_dir, the folder "
                             "of its .onnx file")
    base = os.path.abspath(os.fspath(base_dir))
    files: dict[str, list[str]] = {}
    needs: dict[str, tuple[int, str]] = {}
    for tensor in external:
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        path = os.path.normpath(os.path.join(base, location))
        try:
            inside = bool(location) and not os.path.isabs(location) and os.path.commonpath([base, path]) == base
        except ValueError:  # another drive (Windows)
            inside = False
        if not inside:
            raise CaffeportError(f"the ONNX model's tensor {tensor.name!r} has its data at {location!r}: "
                                 "not a file inside the model's folder (refused)", path=base)
        try:
            end = int(info.get("offset", 0)) + int(info.get("length", 0))
        except ValueError as exc:
            raise CaffeportError(f"the ONNX model's tensor {tensor.name!r} has a non-integer external data "
                                 f"offset or length ({exc})", path=path) from exc
        files.setdefault(path, []).append(tensor.name)
        if end > needs.get(path, (-1, ""))[0]:
            needs[path] = (end, tensor.name)
    for path, names in files.items():
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        if not os.path.isfile(path):
            raise CaffeportError(f"the ONNX model's external data file is missing (it holds the values of tensor "
                                 f"{names[0]!r}{more})", path=path)
        size = os.path.getsize(path)
        end, name = needs[path]
        if size < end:
            raise CaffeportError(f"the ONNX model's external data file is {size} bytes, too short for tensor "
                                 f"{name!r} (it ends at byte {end}): truncated?", path=path)
    return files


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


def run_onnx(model: Any, inputs: Mapping[str, np.ndarray], tensors: list[str], *,
             base_dir: str | os.PathLike[str] | None = None) -> dict[str, np.ndarray]:
    """``tensors`` computed by onnxruntime on ``inputs`` (intermediate ones made graph outputs of a copy).

    ``base_dir``: the folder ``model``'s external data ``location`` entries are relative to (that of its
    ``.onnx``), needed only when it has external tensors; onnxruntime reads them from there (see the module's
    docstring), the copy handed to it holds only their references.
    """
    onnx = require_onnx()
    ort = _onnxruntime()
    external = external_data_files(model, base_dir)
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
    size = copy.ByteSize()
    if size > MAX_PROTO_BYTES:
        raise CaffeportError(f"the ONNX model is {size:,} bytes in memory, above protobuf's 2 GiB limit: "
                             "keep its weights in external data (caffeport convert --external-data)")
    options = ort.SessionOptions()
    if external:
        options.add_session_config_entry(EXTERNAL_FOLDER_KEY, os.path.abspath(os.fspath(base_dir or ".")))
    try:
        session = ort.InferenceSession(copy.SerializeToString(), options, providers=["CPUExecutionProvider"])
        wanted = [name for name in tensors if name in outputs]
        values = session.run(wanted, {name: np.ascontiguousarray(inputs[name], np.float32) for name in feeds})
    except Exception as exc:  # onnxruntime's own errors (a wrong input size, a model it cannot load)
        raise CaffeportError(f"onnxruntime failed: {type(exc).__name__}: {exc}") from exc
    return dict(zip(wanted, (np.asarray(v) for v in values), strict=True))


def verify(net: Net, model: Any, inputs: Mapping[str, np.ndarray], *, all_layers: bool = False,
           rtol: float = RTOL, raw_images: Mapping[str, np.ndarray] | None = None,
           base_dir: str | os.PathLike[str] | None = None) -> list[Comparison]:
    """Compare ``model`` (an ONNX ModelProto) run by onnxruntime with ``caffeport.run(net)`` on ``inputs``.

    ``raw_images``: the ``--image`` inputs before mean, scale and swap; an input whose preprocessing the
    model has baked in (its ``caffeport.preprocessing`` metadata) is fed that, the reference ``inputs``.
    ``base_dir``: the folder of the model's ``.onnx`` when its weights are in external data (`run_onnx`).
    """
    external_data_files(model, base_dir)  # a missing data file: said before the reference runs
    feeds = onnx_feeds(model, inputs, raw_images)
    pairs = tensor_pairs(model, net)
    reference = run(net, inputs, all_layers=True)
    output_names = {info.name for info in model.graph.output}
    graph_inputs = {info.name for info in model.graph.input}
    chosen = [(key, pairs[key]) for key in reference if "/" in key and key in pairs
              and pairs[key] not in graph_inputs and (all_layers or pairs[key] in output_names)]
    if not chosen:
        raise CaffeportError("no tensor of the ONNX model pairs with a Caffe top: is it this net's export?")
    got = run_onnx(model, feeds, list(dict.fromkeys(tensor for _, tensor in chosen)), base_dir=base_dir)
    layers = {key: layer for key, layer, _ in layer_tops(net)}
    return [comparison(key, tensor, reference[key], got.get(tensor), rtol, output=tensor in output_names,
                       layer=layers.get(key)) for key, tensor in chosen]
