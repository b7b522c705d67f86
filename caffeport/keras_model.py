"""Putting converted weights into a concrete Keras model, by layer name, with every shape checked.

Keras 3's own ``.weights.h5`` files are keyed by layer class and position, not by
name (see shared/notes/keras-formats.md), and its legacy ``by_name=True`` loader
skips whatever it cannot place without a word. So caffeport does the placing
itself: each Keras layer takes the weights of the Caffe layer of the same
(sanitised) name, every array's shape is compared with the variable it goes
into, and what was left over on either side is reported (`AssignReport`)
instead of silently left at its initial values.

TensorFlow/Keras is imported only inside the functions that need it: importing
this module (and so the exporter registry) stays cheap.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caffeport.errors import CaffeportError, InputFileError, ModelStructureError
from caffeport.ir import Net, Shape

#: file endings `load_keras_model` reads as a saved model rather than a ``module:attr`` spec
MODEL_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")

#: Keras 2 weight names (the ones caffeport writes) that Keras 3 variables carry under another name
_KERAS3_NAMES = {"depthwise_kernel": "kernel"}


@dataclass(frozen=True)
class WeightMismatch:
    """One weight that cannot go where its name says: ``None`` on a side that has no such weight."""

    layer: str
    weight: str
    #: the shape the Keras variable has
    expected: Shape | None
    #: the shape of the converted Caffe weight
    got: Shape | None

    def __str__(self) -> str:
        def show(shape: Shape | None) -> str:
            return "nothing" if shape is None else str(tuple(shape))

        return f"{self.layer}/{self.weight}: Keras expects {show(self.expected)}, the converted weights have " \
               f"{show(self.got)}"


@dataclass
class AssignReport:
    """What pairing converted weights with a Keras model's layers found, layer by layer."""

    #: Keras layers whose weights were (or, for a check, would be) all set
    assigned: list[str] = field(default_factory=list)
    #: Keras layers with weights that no converted layer fills: they keep their initial values
    unloaded: list[str] = field(default_factory=list)
    #: converted layers with weights that no Keras layer takes
    unused: list[str] = field(default_factory=list)
    #: weights whose shape (or presence) differs; their layers are not assigned
    mismatches: list[WeightMismatch] = field(default_factory=list)
    #: assigned layers whose variable names differ from the converted ones: paired by position
    by_position: list[str] = field(default_factory=list)

    @property
    def mismatched_layers(self) -> list[str]:
        return list(dict.fromkeys(m.layer for m in self.mismatches))

    @property
    def clean(self) -> bool:
        """True when every weighted layer on both sides found its partner with matching shapes."""
        return not self.unloaded and not self.unused and not self.mismatches

    def lines(self) -> list[str]:
        """The report as lines a person reads: one per kind of problem, then one per mismatch."""
        out = [f"{len(self.assigned)} Keras layers with weights matched"]
        if self.unloaded:
            out.append("Keras layers left at their initial values (no converted weights of that name): "
                       + ", ".join(self.unloaded))
        if self.unused:
            out.append("converted layers no Keras layer takes: " + ", ".join(self.unused))
        if self.mismatches:
            out.append("shape mismatches (layers not loaded): " + ", ".join(self.mismatched_layers))
            out.extend(f"  {m}" for m in self.mismatches)
        if self.by_position:
            out.append("paired by position (variable names differ): " + ", ".join(self.by_position))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---------------------------------------------------------------- loading the model


def _keras() -> Any:
    """Import Keras, keeping TensorFlow's C++ INFO lines off stderr unless the user set the level.

    The CLI reports an error in one line; TensorFlow's log lines would bury it.
    Set here it drops the CPU-feature notice; TensorFlow 2.21's oneDNN notice
    is printed regardless unless the variable is already set when Python starts.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import keras
    except ImportError as exc:
        raise CaffeportError(f"Keras is not installed ({exc}); install it, e.g. pip install tensorflow-cpu") from None
    return keras


def load_keras_model(spec: str) -> Any:
    """The Keras model ``spec`` names: ``package.module:attr`` or a saved ``.keras`` (or whole-model ``.h5``) file.

    ``attr`` may be dotted (``module:Class.factory``). A callable that is not
    itself a model is called with no arguments, so a function that builds the
    model is the usual spec: the model is then fresh, never one another caller
    already loaded weights into. The module is imported through ``sys.path``
    as it is; the CLI puts the working directory on it first, as ``python -m``
    does.
    """
    keras = _keras()
    path = Path(spec)
    if path.suffix in MODEL_FILE_SUFFIXES or (":" not in spec and path.exists()):
        return _load_model_file(keras, path)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise CaffeportError(f"--keras-model {spec!r}: give module.path:function (a function returning the model, "
                             "or a model object) or the path of a saved .keras file")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise CaffeportError(f"--keras-model {spec!r}: cannot import {module_name!r} ({exc}); the module is looked "
                             f"up on sys.path, which starts with the working directory {os.getcwd()!r}") from None
    except Exception as exc:  # the user's module failed while being imported
        raise CaffeportError(f"--keras-model {spec!r}: importing {module_name!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise CaffeportError(f"--keras-model {spec!r}: {getattr(obj, '__name__', module_name)!r} has no "
                                 f"attribute {part!r}")
        obj = getattr(obj, part)
    if not isinstance(obj, keras.Model) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:  # the user's builder failed: one line, the cause chained
            raise CaffeportError(f"--keras-model {spec!r}: calling {attr}() failed: {type(exc).__name__}: {exc}") \
                from exc
    if not isinstance(obj, keras.Model):
        raise CaffeportError(f"--keras-model {spec!r}: expected a keras.Model (or a function returning one), "
                             f"got {type(obj).__name__}")
    return obj


def _load_model_file(keras: Any, path: Path) -> Any:
    if not path.is_file():
        raise InputFileError("no such Keras model file", path=path)
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:  # Keras raises ValueError, TypeError, OSError... for files it cannot rebuild
        raise InputFileError(f"Keras cannot load this model ({type(exc).__name__}: {exc}); custom layers must be "
                             "registered with keras.saving.register_keras_serializable, or give module:function "
                             "instead", path=path) from exc


# ---------------------------------------------------------------- pairing


def _weighted_layers(model: Any) -> Iterator[Any]:
    """The layers that own weights, nested models opened up: their layers carry the names users give."""
    keras = _keras()
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def _short_name(name: str) -> str:
    """``conv1/kernel:0`` -> ``kernel``: the variable name a Keras 3 variable carries."""
    name = name.rsplit("/", 1)[-1]
    return name[:-2] if name.endswith(":0") else name


@dataclass(frozen=True)
class _Source:
    """One converted layer's weights: names and shapes, and the arrays when they are at hand."""

    names: list[str]
    shapes: list[Shape]
    arrays: Sequence[Any] | None = None


def _pair(model: Any, sources: dict[str, _Source]) -> tuple[AssignReport, list[tuple[Any, list[Any]]]]:
    """Compare every weighted Keras layer with the source of its name; return the report and what to set.

    A layer is set only when all of its weights fit, so a mismatch never leaves a
    layer half old, half new. Variables are filled in the layer's own order
    (``layer.weights``), taking the converted weights by variable name when the
    names agree and by position otherwise (custom layers may name theirs freely).
    """
    report = AssignReport()
    plan: list[tuple[Any, list[Any]]] = []
    seen: set[str] = set()
    for layer in _weighted_layers(model):
        seen.add(layer.name)
        source = sources.get(layer.name)
        if source is None:
            report.unloaded.append(layer.name)
            continue
        variables = list(layer.weights)
        var_names = [v.name.split("/")[-1] for v in variables]
        names = [_KERAS3_NAMES.get(n, n) if n not in var_names else n for n in source.names]
        if sorted(var_names) == sorted(names) and len(set(var_names)) == len(var_names):
            order = [names.index(n) for n in var_names]
        else:
            order = list(range(len(variables)))
            if len(variables) == len(source.names):
                report.by_position.append(layer.name)
        bad = []
        for var, name, index in zip(variables, var_names, order):
            want = tuple(int(d) for d in var.shape)
            have = source.shapes[index] if index < len(source.shapes) else None
            if have != want:
                bad.append(WeightMismatch(layer.name, name, want, have))
        bad.extend(WeightMismatch(layer.name, source.names[i], None, source.shapes[i])
                   for i in range(len(variables), len(source.names)))
        if bad:
            report.mismatches.extend(bad)
            continue
        report.assigned.append(layer.name)
        if source.arrays is not None:
            plan.append((layer, [np.asarray(source.arrays[i], dtype=v.dtype) for v, i in zip(variables, order)]))
    report.unused = [name for name in sources if name not in seen]
    return report, plan


def _net_sources(net: Net) -> dict[str, _Source]:
    if net.layers and not net.metadata.get("data_format"):
        raise CaffeportError("the weights are not in a Keras layout: convert with a Keras backend "
                             "(tensorflow, cntk, channels_first or theano)")
    return {layer.name: _Source(list(layer.weight_names[: len(layer.blobs)]),
                                [tuple(int(d) for d in b.shape) for b in layer.blobs], layer.blobs)
            for layer in net.layers if layer.blobs and layer.weight_names}


def assign_weights(model: Any, net: Net, *, allow_partial: bool = False) -> AssignReport:
    """Set ``model``'s weights from a net transformed for a Keras backend, layer by layer name.

    Every weighted Keras layer named like a converted layer (``embed_bias`` and
    ``rnn_output`` included) gets that layer's weights in its own variable order.
    A shape mismatch raises `ModelStructureError` before anything is set, unless
    ``allow_partial``: then the layers that fit are set and the rest reported.
    Layers missing on either side never raise; read the report.
    """
    report, plan = _pair(model, _net_sources(net))
    if report.mismatches and not allow_partial:
        raise ModelStructureError("the Keras model does not fit the converted weights: "
                                  + "; ".join(str(m) for m in report.mismatches)
                                  + " (--allow-partial loads the layers that fit)",
                                  layer=report.mismatches[0].layer)
    for layer, arrays in plan:
        layer.set_weights(arrays)
    return report


# ---------------------------------------------------------------- checking a keras-h5 file


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _file_sources(path: Path) -> dict[str, _Source]:
    """The layers of a legacy Keras HDF5 weights file as its loader sees them: ``layer_names``, then ``weight_names``.

    Only shapes are read: the check needs no data.
    """
    try:
        handle = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputFileError("no such file", path=path) from None
    except OSError as exc:
        raise InputFileError(f"not an HDF5 file ({exc})", path=path) from None
    sources: dict[str, _Source] = {}
    with handle:
        if "layer_names" not in handle.attrs:
            kind = "a Keras 3 .weights.h5 file (keyed by layer position, not name)" if "layers" in handle else \
                "not a Keras HDF5 weights file"
            raise InputFileError(f"{kind}: it has no root attribute layer_names; check reads the files "
                                 "'caffeport convert -f keras-h5' writes", path=path)
        for name in (_text(n) for n in handle.attrs["layer_names"]):
            group = handle.get(name)
            if not isinstance(group, h5py.Group):
                raise InputFileError(f"layer_names lists {name!r} but the file has no such group", path=path)
            full = [_text(w) for w in group.attrs.get("weight_names", [])]
            if not full:
                continue
            shapes = []
            for w in full:
                dataset = group.get(w)
                if not isinstance(dataset, h5py.Dataset):
                    raise InputFileError(f"layer {name!r} lists weight {w!r} but has no such dataset", path=path)
                shapes.append(tuple(int(d) for d in dataset.shape))
            sources[name] = _Source([_short_name(w) for w in full], shapes)
    return sources


def check_weights_file(h5_path: str | os.PathLike[str], model: Any) -> AssignReport:
    """What ``model.load_weights(h5_path, by_name=True)`` would do, said out loud; nothing is loaded.

    Keras' by-name loader skips Keras layers the file lacks and file groups the
    model lacks without a message; this compares names and shapes directly.
    """
    return _pair(model, _file_sources(Path(h5_path)))[0]
