"""Human and JSON descriptions of a `Net` (what ``caffeport inspect`` prints).

Kept apart from the CLI so the same summary can be used from Python. Layers
whose blobs do not fit them (`caffeport.layers.blobs`) are marked in the
table and listed as errors after it (``inspect`` then exits 1, the verdict
``convert`` and ``run`` give), with the layers the reference forward cannot
run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from caffeport import __version__
from caffeport.forward import unsupported_layers
from caffeport.ir import Layer, Net, Shape
from caffeport.layers import layer_type
from caffeport.layers.blobs import blob_problems


def format_shape(shape: Shape | None) -> str:
    if shape is None:
        return "?"
    return "x".join(str(d) for d in shape) if shape else "()"


def key_params(layer: Layer) -> str:
    """A short summary of the parameters that decide a layer's behaviour (its type's `LayerType.key_params`)."""
    return layer_type(layer.type).key_params(layer)


def _io(names: list[str], shapes: list[Shape | None]) -> str:
    return ", ".join(
        f"{name}[{format_shape(shapes[i] if i < len(shapes) else None)}]" for i, name in enumerate(names)
    )


def layer_rows(net: Net) -> list[list[str]]:
    rows = []
    problems = blob_problems(net)
    for layer in net.layers:
        blobs = " ".join(f"{format_shape(b.shape)}:{b.dtype.name}" for b in layer.blobs)
        rows.append([
            layer.name,
            layer.type,
            f"{_io(layer.bottoms, layer.bottom_shapes)} -> {_io(layer.tops, layer.top_shapes)}",
            blobs,
            f"{layer.num_weights:,}" if layer.blobs else "",
            " ".join(filter(None, [key_params(layer), "<- BLOBS DO NOT FIT" if layer.name in problems else ""])),
        ])
    return rows


def table(net: Net) -> str:
    """The inspect table, totals, format and match report as text."""
    header = ["name", "type", "bottoms -> tops", "blobs", "params", "key params"]
    rows = layer_rows(net)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    lines.extend(summary_lines(net))
    return "\n".join(lines)


def summary_lines(net: Net) -> list[str]:
    weighted = [layer for layer in net.layers if layer.blobs]
    nbytes = sum(b.nbytes for layer in weighted for b in layer.blobs)
    dtypes = sorted({b.dtype.name for layer in weighted for b in layer.blobs})
    lines = [
        f"net {net.name!r}: {len(net.layers)} layers, {len(weighted)} with weights, "
        f"{net.num_weights:,} parameters ({nbytes / 1e6:.2f} MB {'/'.join(dtypes) or 'no weights'})",
        f"format: {net.source_format}",
    ]
    if net.inputs:
        lines.append("inputs: " + ", ".join(f"{k}[{format_shape(v)}]" for k, v in net.inputs.items()))
    if net.match is not None:
        if net.match.clean:
            lines.append("match: every weighted prototxt layer found its weights; no weights left unused")
        if net.match.missing_weights:
            lines.append("match: prototxt layers with no weights in the caffemodel: "
                         + ", ".join(net.match.missing_weights))
        if net.match.unused_weights:
            lines.append("match: caffemodel weights no prototxt layer uses: " + ", ".join(net.match.unused_weights))
    lines.extend(f"warning: {w}" for w in net.warnings)
    unsupported = unsupported_layers(net)
    if unsupported:
        lines.append(f"run: the reference forward cannot run {len(unsupported)} layer(s): " + "; ".join(unsupported))
    lines.extend(f"error: layer {name!r}: {problem}" for name, problem in blob_problems(net).items())
    return lines


#: the version of ``inspect --json``'s schema (README, "inspect --json"); raised when a field changes meaning
JSON_SCHEMA_VERSION = 1


def to_json(net: Net) -> dict[str, Any]:
    """A JSON-ready description (no weight values), in the schema README documents (`JSON_SCHEMA_VERSION`)."""
    return {
        "schema_version": JSON_SCHEMA_VERSION,
        "caffeport_version": __version__,
        "name": net.name,
        "format": net.source_format,
        "caffemodel": net.caffemodel_path,
        "prototxt": net.prototxt_path,
        "inputs": {k: list(v) for k, v in net.inputs.items()},
        "layers": [
            {
                "name": layer.name,
                "type": layer.type,
                "bottoms": layer.bottoms,
                "tops": layer.tops,
                "bottom_shapes": [list(s) if s is not None else None for s in layer.bottom_shapes],
                "top_shapes": [list(s) if s is not None else None for s in layer.top_shapes],
                "blobs": [{"shape": list(b.shape), "dtype": b.dtype.name} for b in layer.blobs],
                "num_weights": layer.num_weights,
                "params": _jsonable(layer.params),
            }
            for layer in net.layers
        ],
        "num_weights": net.num_weights,
        "match": None if net.match is None else {
            "missing_weights": net.match.missing_weights,
            "unused_weights": net.match.unused_weights,
        },
        "warnings": net.warnings,
        "blob_problems": blob_problems(net),
        "run_unsupported": unsupported_layers(net),
    }


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, float) and math.isfinite(value) and abs(value) <= _FLOAT32_MAX:
        # Caffe's float fields are float32: give the shortest decimal that reads back as the same float32
        # (0.45, not the widened 0.44999998807907104)
        narrowed = np.float32(value)
        return float(str(narrowed)) if float(narrowed) == value else value
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return str(value)
    return value
