"""``caffeport verify``'s target-neutral part: pair a model's tensors with Caffe tops, compare, report.

Each target (`caffeport.onnx.verify` for an exported ONNX file,
`caffeport.verify.torch_target` for a PyTorch module, `caffeport.verify.keras_target`
for a Keras model) only runs its model and says which ``<layer>/<top>`` key of
``caffeport.run(net, inputs, all_layers=True)`` each of its tensors stands
for; the comparison, the table and the first divergence are here.

The measure is the one caffeport's own proof tests use: ``max |got - want| /
max |want|`` (NaN where only one side has a NaN: a failure); a tensor passes
when its shape is Caffe's and that ratio is at most ``rtol``. A Caffe top the
model does not expose (a hand-written model has no tensor for a Split, a
generated one records a folded BatchNorm under its Scale) is listed as "not
exposed": it is no failure, since nothing was compared. Rows keep the order in
which the reference ran the layers, so the first failing row is the first
layer that diverges: the one to look at, every later one may only inherit the
error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from caffeport.errors import CaffeportError
from caffeport.forward import net_outputs, run
from caffeport.ir import Layer, Net

#: the default largest accepted relative error
RTOL = 1e-4


@dataclass(frozen=True)
class Comparison:
    """One Caffe top against the model's tensor for it."""

    key: str
    tensor: str
    shape: tuple[int, ...]
    got_shape: tuple[int, ...] | None
    max_abs: float
    rel: float
    passed: bool
    output: bool
    #: the Caffe layer that wrote the top, and its type (for "first divergence")
    layer: str = ""
    layer_type: str = ""
    #: False: the model has no tensor for this top; listed, not compared, not a failure
    exposed: bool = True
    #: what a missing tensor that was expected (``exposed`` and no value) is called
    missing: str = "not in the ONNX model"

    @property
    def note(self) -> str:
        if not self.exposed:
            return "not exposed"
        if self.got_shape is None:
            return self.missing
        if self.got_shape != self.shape:
            return f"shape {list(self.got_shape)}, Caffe's is {list(self.shape)}"
        return ""


def compare(got: np.ndarray | None, want: np.ndarray) -> tuple[float, float]:
    """(max abs difference, max |got - want| / max |want|); NaN where the NaNs of the two differ, inf past 0."""
    if got is None or got.shape != want.shape:
        return float("nan"), float("nan")
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if not np.array_equal(np.isnan(got64), np.isnan(want64)):
        return float("nan"), float("nan")
    if got64.size == 0:
        return 0.0, 0.0
    with np.errstate(invalid="ignore"):
        diff = np.where(np.isnan(want64) | (got64 == want64), 0.0, np.abs(got64 - want64))
    max_abs = float(np.max(diff))
    scale = float(np.nanmax(np.abs(want64))) if not np.isnan(want64).all() else 0.0
    if not np.isfinite(max_abs):
        return max_abs, float("inf")
    if scale == 0.0:
        return max_abs, 0.0 if max_abs == 0.0 else float("inf")
    return max_abs, max_abs / scale


def comparison(key: str, tensor: str, want: np.ndarray, value: np.ndarray | None, rtol: float, *, output: bool,
               layer: Layer | None = None, missing: str = "not in the ONNX model") -> Comparison:
    """The row of ``key``: ``value`` (None: expected but absent, a failure) against the reference's ``want``."""
    max_abs, rel = compare(value, want)
    passed = value is not None and value.shape == want.shape and bool(rel <= rtol)
    return Comparison(key, tensor, tuple(want.shape), None if value is None else tuple(value.shape), max_abs, rel,
                      passed, output, layer.name if layer else "", layer.type if layer else "", True, missing)


def fed(net: Net, layer: Layer) -> bool:
    """A source layer whose tops the caller gives (Input, or a Data layer standing for an input)."""
    return not layer.bottoms and bool(layer.tops) and all(top in net.inputs for top in layer.tops)


def layer_tops(net: Net) -> list[tuple[str, Layer, str]]:
    """(``<layer>/<top>``, layer, top) for every top a layer computes, in the net's order (inputs left out)."""
    return [(f"{layer.name}/{top}", layer, top) for layer in net.layers if not fed(net, layer) for top in layer.tops]


def output_keys(net: Net) -> dict[str, str]:
    """Net output top -> the ``<layer>/<top>`` key of its last writer (the value the net gives out)."""
    last: dict[str, str] = {}
    for key, _, top in layer_tops(net):
        last[top] = key
    return {top: last[top] for top in net_outputs(net) if top in last}


def pair_rows(net: Net, reference: Mapping[str, np.ndarray], found: Mapping[str, tuple[str, np.ndarray]], *,
              all_layers: bool, rtol: float, missing_output: str) -> list[Comparison]:
    """Rows for a target that found ``found`` (key -> (its own name for the tensor, value)).

    Without ``all_layers`` only the net outputs; with it every top, those the
    model does not expose as "not exposed". A net output the model does not
    give is a failure (``missing_output`` says why).
    """
    outputs = set(output_keys(net).values())
    rows = []
    for key, layer, _top in layer_tops(net):
        if key not in reference or not (all_layers or key in outputs):
            continue
        if key in found:
            name, value = found[key]
            rows.append(comparison(key, name, reference[key], value, rtol, output=key in outputs, layer=layer))
        elif key in outputs:
            rows.append(comparison(key, "-", reference[key], None, rtol, output=True, layer=layer,
                                   missing=missing_output))
        else:
            rows.append(Comparison(key, "-", tuple(reference[key].shape), None, float("nan"), float("nan"), True,
                                   False, layer.name, layer.type, exposed=False))
    return rows


def pair_outputs(net: Net, result: Any, to_numpy: Callable[[Any], np.ndarray | None], framework: str
                 ) -> dict[str, tuple[str, np.ndarray]]:
    """What a model returned, paired with ``<layer>/<top>`` keys: a dict keyed by output top (or by
    ``<layer>/<top>``: a generated model's ``return_all``), or an array / tuple of arrays in the net's output
    order. ``to_numpy`` gives the NCHW array of one returned value (None: not an array)."""
    by_top = output_keys(net)
    known = {key for key, _, _ in layer_tops(net)}
    found: dict[str, tuple[str, np.ndarray]] = {}
    if isinstance(result, Mapping):
        for name, value in result.items():
            array = to_numpy(value)
            key = name if name in known else by_top.get(name) if isinstance(name, str) else None
            if array is not None and key is not None:
                found[key] = (str(name), array)
        return found
    outputs = net_outputs(net)
    arrays = [to_numpy(v) for v in (list(result) if isinstance(result, (tuple, list)) else [result])]
    if any(a is None for a in arrays):
        raise CaffeportError(f"the {framework} model returned {type(result).__name__}: expected a dict of tensors "
                             "keyed by output top, or a tensor or tuple of tensors in the net's output order")
    if len(arrays) != len(outputs):
        raise CaffeportError(f"the {framework} model returned {len(arrays)} tensors, the net has {len(outputs)} "
                             f"outputs ({', '.join(outputs)}): return a dict keyed by output top")
    for top, array in zip(outputs, arrays, strict=True):
        if top in by_top and array is not None:
            found[by_top[top]] = (top, array)
    return found


#: a target's runner: (net, model, inputs, all_layers=) -> ``<layer>/<top>`` -> (its name for the tensor, value)
RunModel = Callable[..., dict[str, tuple[str, np.ndarray]]]


def compare_model(net: Net, model: Any, inputs: Mapping[str, np.ndarray], run_model: RunModel, *,
                  all_layers: bool, rtol: float, missing_output: str) -> list[Comparison]:
    """The rows of a target: ``caffeport.run(net)`` on ``inputs`` against what ``run_model`` finds in ``model``."""
    reference = run(net, inputs, all_layers=True)
    found = run_model(net, model, inputs, all_layers=all_layers)
    return pair_rows(net, reference, found, all_layers=all_layers, rtol=rtol, missing_output=missing_output)


def first_divergence(rows: list[Comparison]) -> Comparison | None:
    """The first failing row in the order the layers ran: the layer to look at first."""
    return next((row for row in rows if not row.passed), None)


def table(rows: list[Comparison], rtol: float) -> str:
    """The per-tensor report, a summary line and, on a failure, the first layer that diverges."""
    header = ("tensor", "caffe top", "shape", "max abs diff", "rel error", "")
    lines = [header]
    for row in rows:
        if not row.exposed:
            verdict = "not exposed"
        else:
            verdict = "ok" if row.passed else "FAIL" + (f" ({row.note})" if row.note else "")
        diffs = ("-", "-") if not row.exposed else (f"{row.max_abs:.3g}", f"{row.rel:.3g}")
        lines.append((row.tensor + (" (output)" if row.output else ""), row.key, "x".join(map(str, row.shape)),
                      *diffs, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)).rstrip() + "  " + line[-1]
            for line in lines]
    compared = [row for row in rows if row.exposed]
    failed = sum(not row.passed for row in compared)
    hidden = len(rows) - len(compared)
    text.append(f"{len(compared) - failed} of {len(compared)} tensors match within rtol {rtol:g}"
                + (f"; {failed} FAIL" if failed else "") + (f"; {hidden} not exposed by the model" if hidden else ""))
    first = first_divergence(rows)
    if first is not None and first.layer:
        text.append(f"first divergence: layer {first.layer} (type {first.layer_type}), top {first.key}")
    return "\n".join(line.rstrip() for line in text)
