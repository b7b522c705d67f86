"""Turn a parsed ``.prototxt`` into a `Net` (structure and parameters, no blobs).

Handles V2 ``layer`` entries, V1 ``layers`` entries with enum type names, and
V0 entries nested inside them. Layers are filtered by phase with Caffe's
``include``/``exclude`` rules (TEST by default, as for deployment), so a
train_test prototxt gives the net Caffe would build for testing.
"""

from __future__ import annotations

import os
from typing import Any

from caffeport.codec import caffe_schema, wire
from caffeport.errors import CaffeportError, InputFileError, ModelStructureError
from caffeport.ir import Layer, Net
from caffeport.readers import v0_layers
from caffeport.readers.net_common import (
    LAYER_COST,
    input_layer_shapes,
    legacy_net_inputs,
    name_list,
    v1_type_name,
    warn_duplicate_names,
)
from caffeport.readers.prototxt_text import parse_text_file

Phase = str  # "TEST" or "TRAIN"

#: the largest prototxt read. The parse tree of a text costs at most about 25 bytes of memory per byte of file
#: (an empty message ``x{}`` is a dict per 3 bytes; any single token costs far less, see
#: tests/hostile/test_tokenizer_memory.py), so this bounds what a hostile file can make us allocate to about
#: 200 MB; real deploy nets are well under 1 MB (ResNet-269's is ~0.5 MB).
MAX_PROTOTXT_BYTES = 8 * 1024 * 1024


def read_prototxt(path: str | os.PathLike[str], phase: Phase = "TEST") -> Net:
    """The net described by the prototxt at ``path``, filtered for ``phase``."""
    path_str = os.fspath(path)
    try:
        size = os.stat(path_str).st_size
    except (OSError, ValueError):
        size = 0  # parse_text_file reports the problem with the path
    if size > MAX_PROTOTXT_BYTES:
        raise InputFileError(
            f"{size:,} bytes is too large for a net prototxt (the limit is {MAX_PROTOTXT_BYTES:,};"
            " a text-format caffemodel with weights is not supported)", path=path_str
        )
    raw = parse_text_file(path)
    if "layer" not in raw and "layers" not in raw and "input" not in raw:
        raise ModelStructureError(
            "no 'layer', 'layers' or 'input' entries: this is not a Caffe net prototxt"
            " (a solver file?)", path=path_str
        )
    net = Net(name=_string(_last(raw, "name", ""), "name", path_str), prototxt_path=path_str, source_format="prototxt")
    entries: list[tuple[str, dict[str, list[Any]]]] = [("V2", e) for e in raw.get("layer", [])]
    entries += [("V1", e) for e in raw.get("layers", [])]
    limit = wire.MAX_OBJECTS // LAYER_COST
    if len(entries) > limit:
        # A Layer costs ~800 bytes and `layer{}` is 7: without a bound, 8 MB of them would take ~1 GB. The bound is
        # the one the caffemodel reader's object budget sets (each layer is charged LAYER_COST objects).
        raise InputFileError(
            f"{len(entries):,} layer entries: more than the {limit:,} caffeport reads, far more than any real net"
            " (a corrupt or hostile file)", path=path_str
        )
    excluded: list[tuple[str, dict[str, list[Any]]]] = []
    for generation, entry in entries:
        if not isinstance(entry, dict):
            raise ModelStructureError(f"a '{'layer' if generation == 'V2' else 'layers'}' entry is not a message",
                                      path=path_str)
        if not _included(entry, phase, path_str):
            excluded.append((generation, entry))
            continue
        net.layers.append(_layer(entry, generation, path_str))
    shapes = [_blob_shape(s, path_str) for s in raw.get("input_shape", [])]
    net.inputs = legacy_net_inputs([_string(n, "input", path_str) for n in raw.get("input", [])],
                                   [_int(d, "input_dim", path_str) for d in raw.get("input_dim", [])], shapes,
                                   path_str)
    net.inputs.update(input_layer_shapes(net.layers, path_str))
    v0_layers.fold_padding_layers(net)
    warn_duplicate_names(net)
    net.warnings.extend(_excluded_sources(net, excluded, phase))
    return net


def _excluded_sources(net: Net, excluded: list[tuple[str, dict[str, list[Any]]]], phase: Phase) -> list[str]:
    """A warning for each layer left out for ``phase`` that alone produced blobs the kept layers read.

    A train prototxt often has its data layer only in the TRAIN phase (``include { phase: TRAIN }``);
    read for TEST, nothing produces ``data``, so every shape after it is unknown and, without this,
    nothing says why.
    """
    produced = set(net.inputs).union(*(layer.tops for layer in net.layers))
    wanted = {bottom for layer in net.layers for bottom in layer.bottoms} - produced
    warnings = []
    for generation, entry in excluded:
        tops = [t for t in entry.get("top", []) if isinstance(t, str) and t in wanted]
        if not tops:
            continue
        wanted -= set(tops)
        name = _last(entry, "name", "")
        kind = _last(entry, "type", "")
        if generation == "V1" and isinstance(kind, (str, int)) and not isinstance(kind, bool):
            kind = v1_type_name(kind)
        tops = list(dict.fromkeys(tops))
        one = len(tops) == 1
        warnings.append(
            f"{name_list(tops, 'input')} {'comes' if one else 'come'} only from layer {name!r} ({kind}), which is"
            f" excluded in the {phase} phase: {'its shape' if one else 'their shapes'} and the shapes after"
            f" {'it' if one else 'them'} are unknown; pass the deploy prototxt (one with an Input layer or"
            " input_shape) for shapes"
        )
    return warnings


def _string(value: Any, field: str, path: str, layer: str | None = None) -> str:
    """A string field's value: protobuf's text format takes only a quoted string (or an enum's identifier)."""
    if isinstance(value, str):
        return value
    raise ModelStructureError(f"{field} must be a string, got {_describe(value)}", path=path, layer=layer)


def _int(value: Any, field: str, path: str, layer: str | None = None) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63:
        return value
    raise ModelStructureError(f"{field} must be an integer, got {_describe(value)}", path=path, layer=layer)


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a message { ... }"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _blob_shape(value: Any, path: str) -> tuple[int, ...]:
    if not isinstance(value, dict):
        raise ModelStructureError(f"input_shape must be a message {{ dim: ... }}, got {_describe(value)}", path=path)
    try:
        shape = caffe_schema.normalize("BlobShape", value)
    except CaffeportError as exc:
        raise ModelStructureError(f"input_shape: {exc.message}", path=path) from None
    return tuple(shape.get("dim", []))


def _last(raw: dict[str, list[Any]], key: str, default: Any) -> Any:
    values = raw.get(key)
    return values[-1] if values else default


def _layer(entry: dict[str, list[Any]], generation: str, path: str) -> Layer:
    if generation == "V1" and "layer" in entry:  # V0 nested inside a V1 entry
        inner = entry["layer"][-1]
        if not isinstance(inner, dict):
            raise ModelStructureError("a V0 'layer' inside 'layers' must be a message { ... }", path=path)
        v0_type = _string(_last(inner, "type", ""), "type", path)
        layer_type = v0_layers.v2_type(v0_type)
        name = _string(_last(entry, "name", _last(inner, "name", "")), "name", path)
        params = {key: [raw] for key, raw in v0_layers.v2_params(inner, layer_type).items()}
    else:
        name = _string(_last(entry, "name", ""), "name", path)
        raw_type = _last(entry, "type", "")
        if generation == "V1" and isinstance(raw_type, int) and not isinstance(raw_type, bool):
            layer_type = v1_type_name(raw_type)
        else:
            raw_type = _string(raw_type, "type", path, name)
            layer_type = v1_type_name(raw_type) if generation == "V1" else raw_type
        params = {k: v for k, v in entry.items() if k.endswith("_param")}
    layer = Layer(
        name=name,
        type=layer_type,
        bottoms=[_string(b, "bottom", path, name) for b in entry.get("bottom", [])],
        tops=[_string(t, "top", path, name) for t in entry.get("top", [])],
    )
    for key, messages in params.items():
        if not all(isinstance(message, dict) for message in messages):
            raise ModelStructureError(f"{key} must be a message {{ ... }}", path=path, layer=name)
    try:
        layer.params = caffe_schema.normalize_params(params)
    except CaffeportError as exc:
        raise ModelStructureError(exc.message, path=path, layer=name) from None
    return layer


def _included(entry: dict[str, list[Any]], phase: Phase, path: str) -> bool:
    """Caffe's StateMeetsRule for phase only: include rules must match one, exclude rules none.

    Rules on level or stage are treated as unmet for include and met for
    exclude (a default NetState has level 0 and no stages) only when they
    name stages; min/max level are compared against level 0.
    """
    includes = [r for r in entry.get("include", []) if isinstance(r, dict)]
    excludes = [r for r in entry.get("exclude", []) if isinstance(r, dict)]
    if includes:
        return any(_rule_met(rule, phase, path) for rule in includes)
    return not any(_rule_met(rule, phase, path) for rule in excludes)


def _rule_met(rule: dict[str, list[Any]], phase: Phase, path: str) -> bool:
    rule_phase = _last(rule, "phase", None)
    if isinstance(rule_phase, dict):
        raise ModelStructureError("a rule's phase must be TRAIN or TEST, got a message", path=path)
    if rule_phase is not None and str(rule_phase) not in (phase, {"TRAIN": "0", "TEST": "1"}.get(phase)):
        return False
    if "min_level" in rule and _int(_last(rule, "min_level", 0), "min_level", path) > 0:
        return False
    if "max_level" in rule and _int(_last(rule, "max_level", 0), "max_level", path) < 0:
        return False
    return not rule.get("stage")
