"""Turn a parsed ``.prototxt`` into a `Net` (structure and parameters, no blobs).

Handles V2 ``layer`` entries, V1 ``layers`` entries with enum type names, and
V0 entries nested inside them. Layers are filtered by phase with Caffe's
``include``/``exclude`` rules (TEST by default, as for deployment), so a
train_test prototxt gives the net Caffe would build for testing.
"""

from __future__ import annotations

import os
from typing import Any

from caffeport.errors import CaffeportError, ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.readers import caffe_schema, v0_layers
from caffeport.readers.caffemodel import input_layer_shapes, legacy_net_inputs, v1_type_name
from caffeport.readers.prototxt_text import parse_text_file

Phase = str  # "TEST" or "TRAIN"

def read_prototxt(path: str | os.PathLike[str], phase: Phase = "TEST") -> Net:
    """The net described by the prototxt at ``path``, filtered for ``phase``."""
    raw = parse_text_file(path)
    path_str = os.fspath(path)
    if "layer" not in raw and "layers" not in raw and "input" not in raw:
        raise ModelStructureError(
            "no 'layer', 'layers' or 'input' entries: this is not a Caffe net prototxt"
            " (a solver file?)", path=path_str
        )
    net = Net(name=str(_last(raw, "name", "")), prototxt_path=path_str, format="prototxt")
    entries: list[tuple[str, dict[str, list[Any]]]] = [("V2", e) for e in raw.get("layer", [])]
    entries += [("V1", e) for e in raw.get("layers", [])]
    for generation, entry in entries:
        if not isinstance(entry, dict):
            raise ModelStructureError(f"a '{'layer' if generation == 'V2' else 'layers'}' entry is not a message",
                                      path=path_str)
        if not _included(entry, phase):
            continue
        net.layers.append(_layer(entry, generation, path_str))
    shapes = [tuple(int(d) for d in s.get("dim", [])) for s in raw.get("input_shape", []) if isinstance(s, dict)]
    net.inputs = legacy_net_inputs([str(n) for n in raw.get("input", [])],
                                   [int(d) for d in raw.get("input_dim", [])], shapes, path_str)
    net.inputs.update(input_layer_shapes(net.layers))
    v0_layers.fold_padding_layers(net)
    return net


def _last(raw: dict[str, list[Any]], key: str, default: Any) -> Any:
    values = raw.get(key)
    return values[-1] if values else default


def _layer(entry: dict[str, list[Any]], generation: str, path: str) -> Layer:
    if generation == "V1" and "layer" in entry:  # V0 nested inside a V1 entry
        inner = entry["layer"][-1]
        v0_type = str(_last(inner, "type", ""))
        layer_type = v0_layers.v2_type(v0_type)
        name = str(_last(entry, "name", _last(inner, "name", "")))
        params = v0_layers.v2_params(inner, layer_type)
    else:
        name = str(_last(entry, "name", ""))
        raw_type = _last(entry, "type", "")
        layer_type = v1_type_name(raw_type) if generation == "V1" else str(raw_type)
        params = {k: v[-1] if len(v) == 1 else _merge(v) for k, v in entry.items() if k.endswith("_param")}
    layer = Layer(
        name=name,
        type=layer_type,
        bottoms=[str(b) for b in entry.get("bottom", [])],
        tops=[str(t) for t in entry.get("top", [])],
    )
    for key, raw in params.items():
        if not isinstance(raw, dict):
            raise ModelStructureError(f"{key} must be a message {{ ... }}", path=path, layer=name)
        try:
            layer.params[key] = caffe_schema.normalize(caffe_schema.PARAM_KEY_BY_NAME.get(key, key), raw)
        except CaffeportError as exc:
            raise ModelStructureError(f"{key}: {exc.message}", path=path, layer=name) from None
    return layer


def _merge(messages: list[Any]) -> dict[str, list[Any]]:
    """A message field given twice is merged field by field (protobuf semantics)."""
    merged: dict[str, list[Any]] = {}
    for message in messages:
        if isinstance(message, dict):
            for key, values in message.items():
                merged.setdefault(key, []).extend(values)
    return merged


def _included(entry: dict[str, list[Any]], phase: Phase) -> bool:
    """Caffe's StateMeetsRule for phase only: include rules must match one, exclude rules none.

    Rules on level or stage are treated as unmet for include and met for
    exclude (a default NetState has level 0 and no stages) only when they
    name stages; min/max level are compared against level 0.
    """
    includes = [r for r in entry.get("include", []) if isinstance(r, dict)]
    excludes = [r for r in entry.get("exclude", []) if isinstance(r, dict)]
    if includes:
        return any(_rule_met(rule, phase) for rule in includes)
    return not any(_rule_met(rule, phase) for rule in excludes)


def _rule_met(rule: dict[str, list[Any]], phase: Phase) -> bool:
    rule_phase = _last(rule, "phase", None)
    if rule_phase is not None and str(rule_phase) not in (phase, {"TRAIN": "0", "TEST": "1"}.get(phase)):
        return False
    if "min_level" in rule and int(_last(rule, "min_level", 0)) > 0:
        return False
    if "max_level" in rule and int(_last(rule, "max_level", 0)) < 0:
        return False
    return not rule.get("stage")
