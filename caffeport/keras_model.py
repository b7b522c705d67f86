"""Putting converted weights into a concrete Keras model, by layer name, with every shape checked.

Keras 3's own ``.weights.h5`` files are keyed by layer class and position, not by
name (groups ``layers/conv2d``, ``layers/conv2d_1``, ... in ``model.layers`` order,
and ``load_weights`` refuses ``by_name=True`` for them), and its legacy ``by_name=True`` loader
skips whatever it cannot place without a word. So caffeport does the placing
itself: each Keras layer takes the weights of the Caffe layer of the same
(sanitised) name, every array's shape is compared with the variable it goes
into, and what was left over on either side is reported (`AssignReport`)
instead of silently left at its initial values.

`check_weights_file` says what loading a file into a model would do, without
loading it: for a keras-h5 file what Keras 3's and tf_keras'
``load_weights(by_name=True)`` would skip without a word, for a Keras 3
``.weights.h5`` file which layer would receive another layer's weights. It
reads files from the internet, so it follows the HDF5 snapshot reader's rules:
a regular file only (never a FIFO that would block), hard links only, no
external or virtual storage, and a `CaffeportError` for any malformed
attribute.

TensorFlow/Keras is imported only inside the functions that need it: importing
this module (and so the exporter registry) stays cheap.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from caffeport.errors import CaffeportError, InputFileError, ModelStructureError, option_error
from caffeport.ir import Net, Shape
from caffeport.readers.files import check_file
from caffeport.readers.hdf5_snapshot import _H5PY_ERRORS, _member, _Where

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


@dataclass(frozen=True)
class EpsMismatch:
    """A BatchNormalization layer built with another epsilon than Caffe's: its weights fit, its output does not."""

    layer: str
    keras: float
    caffe: float

    def __str__(self) -> str:
        return f"{self.layer}: epsilon is {self.keras:g} in Keras, {self.caffe:g} in Caffe (build it with " \
               f"epsilon={self.caffe!r})"


@dataclass(frozen=True)
class Misplaced:
    """Keras 3 ``.weights.h5``: the weights at a Keras layer's place in the file were saved from another layer."""

    layer: str
    source: str
    place: str

    def __str__(self) -> str:
        return f"{self.layer} would get the weights saved from {self.source!r} ({self.place})"


#: how a report describes each kind of problem, per loader: caffeport's own assignment (``-f keras3``),
#: Keras' ``load_weights(by_name=True)`` of a keras-h5 file, Keras 3's ``load_weights`` of a ``.weights.h5`` file.
#: Measured with Keras 3.15 and tf_keras 2.21 (tests/test_check_hardening.py, tests/tfkeras/).
_WORDING = {
    "assign": {
        "unloaded": "Keras layers left at their initial values (no converted weights of that name)",
        "unused": "converted layers no Keras layer takes",
        "mismatches": "shape mismatches (layers not loaded)",
        "eps": "BatchNormalization epsilon differs from Caffe's",
    },
    "by_name": {
        "unloaded": "Keras layers load_weights(by_name=True) skips without a word, leaving them at their initial "
                    "values (no weights of that name in the file)",
        "unused": "layers of the file no Keras layer takes (ignored without a word)",
        "mismatches": "shape mismatches (load_weights(by_name=True) raises on them, in Keras 3 and in tf_keras; "
                      "tf_keras first reorders a convolution kernel's axes and loads it without a word if that "
                      "fits)",
        "eps": "BatchNormalization epsilon differs from the one the file records (the weights load without a word, "
               "the layer computes something else)",
    },
    "keras3": {
        "unloaded": "Keras layers the file holds no weights for (load_weights raises)",
        "unused": "weights in the file no Keras layer takes (ignored without a word)",
        "mismatches": "shape mismatches (load_weights raises on them)",
        "misplaced": "Keras layers that would get another layer's weights without a word (a .weights.h5 file "
                     "places weights by layer class and position, not by name)",
        "eps": "BatchNormalization epsilon differs from the one the file records (the weights load without a word, "
               "the layer computes something else)",
    },
}


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
    #: BatchNormalization layers whose epsilon is not Caffe's
    eps_mismatches: list[EpsMismatch] = field(default_factory=list)
    #: Keras 3 ``.weights.h5`` only: layers whose place in the file holds another layer's weights
    misplaced: list[Misplaced] = field(default_factory=list)
    #: whose consequences `lines` describes: ``assign`` (caffeport sets the weights), ``by_name`` (Keras loads a
    #: keras-h5 file by name) or ``keras3`` (Keras 3 loads a ``.weights.h5`` file by position)
    loader: str = "assign"

    @property
    def mismatched_layers(self) -> list[str]:
        return list(dict.fromkeys(m.layer for m in self.mismatches))

    @property
    def clean(self) -> bool:
        """True when every weighted layer on both sides found its partner with matching shapes (and epsilon)."""
        return not (self.unloaded or self.unused or self.mismatches or self.eps_mismatches or self.misplaced)

    def lines(self) -> list[str]:
        """The report as lines a person reads: one per kind of problem, then one per mismatch."""
        words = _WORDING[self.loader]
        out = [f"{len(self.assigned)} Keras layers with weights matched"]
        if self.unloaded:
            out.append(f"{words['unloaded']}: " + ", ".join(self.unloaded))
        if self.unused:
            out.append(f"{words['unused']}: " + ", ".join(self.unused))
        if self.mismatches:
            out.append(f"{words['mismatches']}: " + ", ".join(self.mismatched_layers))
            out.extend(f"  {m}" for m in self.mismatches)
        if self.misplaced:
            out.append(f"{words['misplaced']}: " + ", ".join(m.layer for m in self.misplaced))
            out.extend(f"  {m}" for m in self.misplaced)
        if self.eps_mismatches:
            out.append(f"{words['eps']}: " + ", ".join(m.layer for m in self.eps_mismatches))
            out.extend(f"  {m}" for m in self.eps_mismatches)
        if self.by_position:
            out.append("paired by position (variable names differ): " + ", ".join(self.by_position))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


# ---------------------------------------------------------------- loading the model


def _quiet_tensorflow() -> None:
    """Keep TensorFlow's C++ INFO lines off stderr unless the user set the level.

    The CLI reports an error in one line; TensorFlow's log lines would bury it.
    Set before TensorFlow loads it drops the CPU-feature notice; TensorFlow
    2.21's oneDNN notice is printed regardless unless the variable is already
    set when Python starts.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _keras() -> Any:
    """Import Keras (Keras 3, or Keras 2 with an older TensorFlow)."""
    _quiet_tensorflow()
    try:
        import keras
    except ImportError as exc:
        raise CaffeportError(f"Keras is not installed ({exc}); install it, e.g. pip install tensorflow-cpu") from None
    return keras


def _model_types() -> tuple[type, ...]:
    """The classes a model may be: ``keras.Model``, and ``tf_keras.Model`` once something imported tf_keras.

    Both load keras-h5 files by name, so `check_weights_file` takes either. A
    tf_keras model can only come from code that imported tf_keras (directly or
    as ``tf.keras`` with ``TF_USE_LEGACY_KERAS=1``), so tf_keras is never
    imported here for nothing.
    """
    types: list[type] = []
    try:
        types.append(_keras().Model)
    except CaffeportError:
        if "tf_keras" not in sys.modules:
            raise
    tf_keras = sys.modules.get("tf_keras")
    model = getattr(tf_keras, "Model", None)
    if isinstance(model, type):
        types.append(model)
    return tuple(types)


def is_keras3_model(model: Any) -> bool:
    """True for a Keras 3 model: the only kind whose ``save_weights`` writes a Keras 3 ``.weights.h5`` file."""
    keras = sys.modules.get("keras")
    version = str(getattr(keras, "__version__", "0"))
    return keras is not None and isinstance(model, keras.Model) and int(version.split(".")[0]) >= 3


def load_keras_model(spec: str) -> Any:
    """The Keras model ``spec`` names: ``package.module:attr`` or a saved ``.keras`` (or whole-model ``.h5``) file.

    ``attr`` may be dotted (``module:Class.factory``). A callable that is not
    itself a model is called with no arguments, so a function that builds the
    model is the usual spec: the model is then fresh, never one another caller
    already loaded weights into. The module is imported through ``sys.path``
    as it is; the CLI puts the working directory on it first, as ``python -m``
    does. The model may be a Keras 3 or a tf_keras one.
    """
    _quiet_tensorflow()
    path = Path(spec)
    if path.suffix in MODEL_FILE_SUFFIXES or (":" not in spec and path.exists()):
        return _load_model_file(_keras(), path)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise _spec_error(spec, "give module.path:function (a function returning the model, "
                             "or a model object) or the path of a saved .keras file")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise _spec_error(spec, f"cannot import {module_name!r} ({exc}); the module is looked "
                             f"up on sys.path, which starts with the working directory {os.getcwd()!r}") from None
    except Exception as exc:  # the user's module failed while being imported
        raise _spec_error(spec, f"importing {module_name!r} failed: "
                             f"{type(exc).__name__}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise _spec_error(spec, f"{getattr(obj, '__name__', module_name)!r} has no "
                                 f"attribute {part!r}")
        obj = getattr(obj, part)
    models = _model_types()
    if not isinstance(obj, models) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:  # the user's builder failed: one line, the cause chained
            raise _spec_error(spec, f"calling {attr}() failed: {type(exc).__name__}: {exc}") \
                from exc
        models = _model_types()  # the builder may be what imported tf_keras
    if not isinstance(obj, models):
        raise _spec_error(spec, f"expected a keras.Model or tf_keras.Model (or a function "
                             f"returning one), got {type(obj).__name__}")
    return obj


def _spec_error(spec: str, message: str) -> CaffeportError:
    """An error about the model spec, naming the option as the caller spells it (``keras_model=``/``--keras-model``)."""
    return option_error(CaffeportError, "{keras_model=}{spec}: {message}",
                        fill={"spec": repr(spec), "message": message})


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
    models = _model_types()
    for layer in model.layers:
        if isinstance(layer, models):
            yield from _weighted_layers(layer)
        elif layer.weights:
            yield layer


def _short_name(name: str) -> str:
    """``conv1/kernel:0`` -> ``kernel``: the variable name a Keras 3 variable carries (tf_keras keeps the rest)."""
    name = name.rsplit("/", 1)[-1]
    return name[:-2] if name.endswith(":0") else name


@dataclass(frozen=True)
class _Source:
    """One converted layer's weights: names and shapes, and the arrays when they are at hand."""

    names: list[str]
    shapes: list[Shape]
    arrays: Sequence[Any] | None = None
    #: the layer name a Keras 3 ``.weights.h5`` file records for this place (None: not recorded)
    saved_from: str | None = None


def _eps_mismatch(layer: Any, eps: dict[str, float]) -> EpsMismatch | None:
    """The layer's epsilon against Caffe's, for a layer Caffe recorded one for (float32 eps: 1e-6 relative)."""
    caffe = eps.get(layer.name)
    keras_eps = getattr(layer, "epsilon", None)
    if caffe is None or not isinstance(keras_eps, (int, float)):
        return None
    return None if math.isclose(float(keras_eps), caffe, rel_tol=1e-6) else EpsMismatch(layer.name, keras_eps, caffe)


def _pair(model: Any, sources: dict[str, _Source], eps: dict[str, float] | None = None,
          ) -> tuple[AssignReport, list[tuple[Any, list[Any]]]]:
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
        var_names = [_short_name(v.name) for v in variables]
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
        eps_bad = _eps_mismatch(layer, eps or {})
        if eps_bad is not None:
            report.eps_mismatches.append(eps_bad)
        report.assigned.append(layer.name)
        if source.arrays is not None:
            plan.append((layer, [np.asarray(source.arrays[i], dtype=v.dtype) for v, i in zip(variables, order)]))
    report.unused = [name for name in sources if name not in seen]
    return report, plan


def _net_sources(net: Net) -> dict[str, _Source]:
    if net.layers and net.conversion.weight_names != "keras":
        raise CaffeportError("the weights are not in a Keras layout: convert with a Keras backend "
                             "(tensorflow, cntk, channels_first or theano)")
    return {layer.name: _Source(list(layer.weight_names[: len(layer.blobs)]),
                                [tuple(int(d) for d in b.shape) for b in layer.blobs], layer.blobs)
            for layer in net.layers if layer.blobs and layer.weight_names}


def _renamed(values: dict[str, float], name_map: dict[str, str]) -> dict[str, float]:
    """Values keyed by Caffe layer name, keyed by the (sanitised) name the converted layer carries."""
    return {name_map.get(name, name): value for name, value in values.items()}


def assign_weights(model: Any, net: Net, *, allow_partial: bool = False) -> AssignReport:
    """Set ``model``'s weights from a net transformed for a Keras backend, layer by layer name.

    Every weighted Keras layer named like a converted layer (``embed_bias`` and
    ``rnn_output`` included) gets that layer's weights in its own variable order.
    Anything that would leave the model computing something else than Caffe
    raises `ModelStructureError` before anything is set: a shape mismatch, a
    Keras layer no converted layer fills (it would keep its initial values: a
    PReLU's alpha starts at 0, which makes it a silent ReLU), a
    BatchNormalization epsilon other than Caffe's. With ``allow_partial`` the
    layers that fit are set and the rest reported instead. Converted layers
    the model has no place for are only reported: a model may leave out a
    head on purpose.
    """
    eps = _renamed(net.conversion.batchnorm_eps, net.conversion.name_map)
    report, plan = _pair(model, _net_sources(net), eps)
    problems = [str(m) for m in report.mismatches]
    problems += [f"{name}: no converted weights of that name (it would keep its initial values)"
                 for name in report.unloaded]
    problems += [str(m) for m in report.eps_mismatches]
    if problems and not allow_partial:
        first = (report.mismatches[0].layer if report.mismatches else report.unloaded[0] if report.unloaded
                 else report.eps_mismatches[0].layer)
        raise option_error(ModelStructureError, "the Keras model does not fit the converted weights: {problems} "
                           "({allow_partial} loads the layers that fit)", fill={"problems": "; ".join(problems)},
                           layer=first)
    for layer, arrays in plan:
        layer.set_weights(arrays)
    return report


# ---------------------------------------------------------------- reading a Keras weights file, safely


#: groups a Keras 3 weights file may nest (Keras nests a few levels: layers/<layer>/cell/vars)
_MAX_DEPTH = 32


@dataclass
class WeightsFile:
    """What `read_weights_file` found: which kind of file, its layers' weight shapes, the recorded eps."""

    path: str
    #: ``keras-h5`` (legacy, ``layer_names``; loaded by name) or ``keras3`` (a ``.weights.h5``; loaded by place)
    kind: str
    #: keras-h5: by layer name; keras3: by place in the file (``layers/conv2d``), `_Source.saved_from` the name
    sources: dict[str, _Source]
    #: BatchNorm eps by (file) layer name, from the ``caffeport`` attribute caffeport writes
    eps: dict[str, float] = field(default_factory=dict)


class _Opened:
    """``h5py.File`` on a descriptor opened without blocking, closed with it.

    `check_file` refuses a FIFO, device or directory with a clear message; the
    descriptor is then opened with ``O_NONBLOCK`` and checked again, so a FIFO
    put in the file's place since cannot block the open, and h5py reads the
    very file that was checked.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        p = check_file(path)
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except OSError as exc:
            raise InputFileError(f"cannot open: {exc.strerror or exc}", path=p) from None
        self.raw = os.fdopen(fd, "rb")
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise InputFileError("is not a regular file", path=p)
            os.set_blocking(fd, True)
            self.handle = h5py.File(self.raw, "r")
        except _H5PY_ERRORS as exc:
            self.raw.close()
            raise InputFileError(f"not an HDF5 file ({exc})", path=p) from None
        except BaseException:
            self.raw.close()
            raise

    def __enter__(self) -> h5py.File:
        return self.handle

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
        self.raw.close()


def _text_value(value: object, what: str, where: _Where) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise where.error(f"{what} is not valid UTF-8 ({value[:40]!r})") from None
    if isinstance(value, str):
        return value
    raise where.error(f"{what} is {type(value).__name__} {_show(value)}, expected text")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _names_attr(attrs: h5py.AttributeManager, key: str, where: _Where) -> list[str] | None:
    """A Keras list-of-names attribute (``layer_names``, ``weight_names``), None when absent.

    Keras splits a list too long for one HDF5 attribute into ``key0``,
    ``key1``, ... and reads them back joined; so does this.
    """
    if key in attrs:
        chunks = [attrs[key]]
    elif f"{key}0" in attrs:
        chunks = []
        while f"{key}{len(chunks)}" in attrs and len(chunks) < 1 << 16:
            chunks.append(attrs[f"{key}{len(chunks)}"])
    else:
        return None
    names = []
    for chunk in chunks:
        array = np.asarray(chunk)
        if array.ndim != 1:
            raise where.error(f"attribute {key} is {'a scalar' if array.ndim == 0 else f'{array.ndim}-D'} "
                              f"({_show(chunk)}), expected a list of names")
        names.extend(_text_value(item, f"an entry of attribute {key}", where) for item in array.tolist())
    return names


def _child(group: h5py.Group, name: str, where: _Where) -> object | None:
    """``group[name]`` through a hard link only (the snapshot reader's rule), None when there is no such member."""
    if group.get(name, getlink=True) is None:
        return None
    return _member(group, name, where)


def _resolve(group: h5py.Group, path: str, where: _Where) -> object | None:
    """A weight's dataset from its ``weight_names`` entry: a path inside the layer's group, link by link."""
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise where.error(f"weight name {path!r} is not a path inside the layer's group")
    obj: object | None = group
    for part in parts:
        if not isinstance(obj, h5py.Group):
            return None
        obj = _child(obj, part, where)
    return obj


def _shape(dataset: object, label: str, where: _Where) -> Shape:
    """A weight dataset's shape, once it is known to keep its values in this file."""
    if not isinstance(dataset, h5py.Dataset):
        raise where.error(f"{label} is not a dataset")
    if dataset.external or dataset.is_virtual:
        raise where.error(f"{label} keeps its values in other files (external or virtual storage): refused")
    if dataset.shape is None:
        raise where.error(f"{label} has no dataspace (a null dataset)")
    return tuple(int(d) for d in dataset.shape)


def _metadata_eps(attrs: h5py.AttributeManager, where: _Where) -> dict[str, float]:
    """The BatchNorm eps values caffeport records (attribute ``caffeport``), by the name the file gives the layer."""
    if "caffeport" not in attrs:
        return {}
    try:
        meta = json.loads(_text_value(attrs["caffeport"], "attribute caffeport", where))
    except ValueError as exc:
        raise where.error(f"attribute caffeport is not JSON ({exc})") from None
    eps = meta.get("batchnorm_eps", {}) if isinstance(meta, dict) else None
    name_map = meta.get("name_map", {}) if isinstance(meta, dict) else None
    if not (isinstance(eps, dict) and isinstance(name_map, dict)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in eps.values())
            and all(isinstance(v, str) for v in name_map.values())):
        raise where.error("attribute caffeport: batchnorm_eps must map layer names to numbers and name_map "
                          "names to names")
    return _renamed({str(k): float(v) for k, v in eps.items()}, name_map)


def _legacy_sources(handle: h5py.File, where: _Where) -> dict[str, _Source]:
    """The layers of a legacy Keras HDF5 file as its loader sees them: ``layer_names``, then ``weight_names``."""
    sources: dict[str, _Source] = {}
    for name in _names_attr(handle.attrs, "layer_names", where) or []:
        where.layer = name
        group = _child(handle, name, where) if name and "/" not in name else None
        if not isinstance(group, h5py.Group):
            raise where.error("layer_names lists this layer but the file has no such group")
        full = _names_attr(group.attrs, "weight_names", where)
        if full is None:
            raise where.error("the layer's group has no weight_names attribute (every Keras writer gives one, "
                              "empty for a layer without weights): not a Keras weights file, or a damaged one")
        shapes = []
        for w in full:
            dataset = _resolve(group, w, where)
            if dataset is None:
                raise where.error(f"weight_names lists {w!r} but the group has no such dataset")
            shapes.append(_shape(dataset, f"weight {w!r}", where))
        if full:
            sources[name] = _Source([_short_name(w) for w in full], shapes)
    where.layer = None
    return sources


def _keras3_sources(handle: h5py.File, where: _Where) -> dict[str, _Source]:
    """Every ``.../vars`` group of a Keras 3 weights file with weights, by its place (``layers/conv2d``).

    Keras 3 writes the saved layer's name as the ``name`` attribute of its
    ``vars`` group; the datasets are named ``0``, ``1``, ... in the layer's
    variable order. Every object is reached through hard links only and at
    most once (a hard-linked cycle would otherwise never end).
    """
    sources: dict[str, _Source] = {}
    seen: set[int] = set()

    def visit(group: h5py.Group, place: str, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise where.error(f"groups nested more than {_MAX_DEPTH} deep at {group.name!r}: refused")
        for name in group:
            if not isinstance(name, str):
                raise where.error(f"a member name of {group.name!r} is not valid UTF-8")
            child = _child(group, name, where)
            if isinstance(child, (h5py.Group, h5py.Dataset)):
                key = hash(child.id)
                if key in seen:
                    raise where.error(f"{child.name!r} is reached twice through hard links, which Keras never "
                                      "writes: refused")
                seen.add(key)
            if name == "vars" and isinstance(child, h5py.Group):
                count = len(child)
                if sorted(child) != sorted(str(i) for i in range(count)):
                    raise where.error(f"{child.name}: weight datasets are not named 0..{count - 1}")
                shapes = [_shape(_child(child, str(i), where), f"{child.name}/{i}", where) for i in range(count)]
                saved_from = _text_value(child.attrs["name"], f"attribute name of {child.name}", where) \
                    if "name" in child.attrs else None
                if shapes:
                    sources[place or "(the model itself)"] = _Source([f"vars/{i}" for i in range(count)], shapes,
                                                                     saved_from=saved_from)
            elif isinstance(child, h5py.Group):
                visit(child, f"{place}/{name}" if place else name, depth + 1)

    visit(handle, "", 0)
    return sources


def read_weights_file(path: str | os.PathLike[str]) -> WeightsFile:
    """A keras-h5 or Keras 3 ``.weights.h5`` file's layers and weight shapes; only shapes are read, no data."""
    where = _Where(os.fspath(path))
    with _Opened(path) as handle:
        try:
            if _names_attr(handle.attrs, "layer_names", where) is not None:
                return WeightsFile(where.path, "keras-h5", _legacy_sources(handle, where),
                                   _metadata_eps(handle.attrs, where))
            if isinstance(handle.get("layers", getlink=True), h5py.HardLink) or \
                    isinstance(handle.get("vars", getlink=True), h5py.HardLink):
                return WeightsFile(where.path, "keras3", _keras3_sources(handle, where),
                                   _metadata_eps(handle.attrs, where))
        except _H5PY_ERRORS as exc:
            raise where.error(f"corrupt HDF5 file ({type(exc).__name__}: {exc})") from None
    raise InputFileError("not a Keras weights file: it has neither the root attribute layer_names (keras-h5, "
                         "'caffeport convert -f keras-h5') nor a layers group (Keras 3 .weights.h5, "
                         "'-f keras3')", path=where.path)


# ---------------------------------------------------------------- checking a file against a model


def _model_layout(model: Any) -> dict[str, _Source]:
    """Where Keras 3 puts each of ``model``'s layers in a ``.weights.h5`` file, asked of Keras itself.

    The places are class names numbered in traversal order; rather than
    re-deriving Keras' rules, the model's own weights are saved to a temporary
    file with ``model.save_weights`` and read back like the file checked.
    """
    if not is_keras3_model(model):
        raise CaffeportError("a Keras 3 .weights.h5 file loads only into a Keras 3 model: give one, or check a "
                             "keras-h5 file ('caffeport convert -f keras-h5') for a tf_keras model")
    with tempfile.TemporaryDirectory(prefix="caffeport-check-") as folder:
        own = Path(folder) / "model.weights.h5"
        try:
            model.save_weights(own)
        except Exception as exc:  # an unbuilt model, a custom layer that cannot save its variables
            raise CaffeportError(f"Keras cannot save this model's weights to compare them ({type(exc).__name__}: "
                                 f"{exc})") from exc
        return read_weights_file(own).sources


def _pair_places(model: Any, weights: WeightsFile) -> AssignReport:
    """Compare a Keras 3 weights file with the model place by place, as ``load_weights`` assigns."""
    report = AssignReport(loader="keras3")
    layers = {layer.name: layer for layer in _weighted_layers(model)}
    layout = _model_layout(model)
    for place, own in layout.items():
        name = own.saved_from or place
        theirs = weights.sources.get(place)
        if theirs is None:
            report.unloaded.append(name)
            continue
        bad = [WeightMismatch(name, label, want, have)
               for label, want, have in zip(own.names, own.shapes, theirs.shapes) if want != have]
        bad += [WeightMismatch(name, label, want, None) for label, want in
                zip(own.names[len(theirs.shapes):], own.shapes[len(theirs.shapes):])]
        bad += [WeightMismatch(name, label, None, have) for label, have in
                zip(theirs.names[len(own.shapes):], theirs.shapes[len(own.shapes):])]
        if bad:
            report.mismatches.extend(bad)
        elif theirs.saved_from is not None and own.saved_from is not None and theirs.saved_from != own.saved_from:
            report.misplaced.append(Misplaced(name, theirs.saved_from, place))
        else:
            report.assigned.append(name)
            layer = layers.get(name)
            eps_bad = _eps_mismatch(layer, weights.eps) if layer is not None else None
            if eps_bad is not None:
                report.eps_mismatches.append(eps_bad)
    report.unused = [source.saved_from or place for place, source in weights.sources.items() if place not in layout]
    return report


def check_weights_file(weights: str | os.PathLike[str] | WeightsFile, model: Any) -> AssignReport:
    """What loading the file into ``model`` would do, said out loud; nothing is loaded.

    A keras-h5 file is compared by layer name, as ``load_weights(by_name=True)``
    assigns it in Keras 3 and tf_keras: both skip Keras layers the file lacks
    and file groups the model lacks without a message. A Keras 3
    ``.weights.h5`` file is compared place by place, as ``load_weights``
    assigns it: a layer whose place holds weights saved from a layer of
    another name (same class, other order) gets them without a word. Both
    compare every weight's shape, and BatchNormalization epsilons with the
    values caffeport recorded in the file.
    """
    if not isinstance(weights, WeightsFile):
        weights = read_weights_file(weights)
    if weights.kind == "keras3":
        return _pair_places(model, weights)
    report = _pair(model, weights.sources, weights.eps)[0]
    report.loader = "by_name"
    return report
