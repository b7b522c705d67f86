"""Keras 3 native files, written by Keras itself from a model the user supplies.

A Keras 3 ``.weights.h5`` file names no layers: its groups are the layers'
class names numbered in ``model.layers`` order (``layers/conv2d``, ``layers/conv2d_1``, ...),
so it can only be written against the very model that will load it. This
format therefore imports the user's model (``--keras-model``), puts the
converted weights into it by layer name with every shape checked
(`caffeport.keras_model.assign_weights`), and lets Keras serialise it:
``model.save_weights`` for ``.weights.h5``, or ``model.save`` for a whole
``.keras`` model with ``--save-model``. Anything that would leave the model
computing something else than Caffe (a shape mismatch, a Keras layer left at
its initial values, another BatchNorm epsilon) fails the conversion unless
``--allow-partial``; what did not pair up goes into the net's report and
warnings, so the convert summary shows it; nothing is printed here. A
``.weights.h5`` file also gets caffeport's ``caffeport`` root attribute (the
keras-h5 format's metadata: source, eps values, name map), which Keras ignores
and ``caffeport check`` reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caffeport.errors import CaffeportError, OutputError, option_error
from caffeport.exporters.registry import (
    KERAS_BACKENDS,
    EpsTarget,
    ExportOptions,
    conversion_metadata,
    register_exporter,
)
from caffeport.ir import Net, ReportEntry

if TYPE_CHECKING:
    from caffeport.keras_model import AssignReport

WEIGHTS_SUFFIX = ".weights.h5"
MODEL_SUFFIX = ".keras"


@register_exporter("keras3",
                   eps=EpsTarget("Keras", "BatchNormalization(epsilon=...)", 1e-3,
                                 "your model: set epsilon where you build it"),
                   suffix=WEIGHTS_SUFFIX, default_backend="tensorflow", backends=KERAS_BACKENDS,
                   other_suffixes=(MODEL_SUFFIX,), options=("keras_model", "allow_partial", "save_model"),
                   check=lambda output, options: check_output_name(output, options.save_model),
                   description="Keras 3 .weights.h5 (or .keras with --save-model) for a model given by --keras-model; "
                   "loads with plain model.load_weights(path)")
def write_keras3(net: Net, path: Path, options: ExportOptions) -> None:
    if not options.keras_model:
        raise option_error(CaffeportError, "the keras3 format needs the Keras model the weights are for: Keras 3 "
                           "files key weights by layer position, not name, so they can only be written from a "
                           "concrete model. Pass {keras_model=}module.path:function (a function building the model, "
                           "layer names = Caffe layer names) or a saved .keras file; or use {format=keras-h5} for "
                           "by-name loading")
    from caffeport.keras_model import assign_weights, is_keras3_model, load_keras_model  # (h5py: only here)

    check_output_name(path, options.save_model)
    model = load_keras_model(options.keras_model)
    if not is_keras3_model(model):
        raise option_error(CaffeportError, "{keras_model=}{spec} is a {kind} model: {format=keras3} writes Keras 3 "
                           "files, which only Keras 3 models load; for tf_keras use {format=keras-h5} and "
                           "load_weights(path, by_name=True)",
                           fill={"spec": repr(options.keras_model), "kind": type(model).__module__.split(".")[0]})
    report = assign_weights(model, net, allow_partial=options.allow_partial)
    _record(net, report)
    _save(model, path, options.save_model)
    if not options.save_model:
        _add_metadata(net, path)


def check_output_name(path: str | os.PathLike[str], save_model: bool) -> None:
    """Refuse a name Keras would misread: it picks its reader from the file name.

    A Keras 3 weights file named ``*.h5`` goes to the legacy HDF5 reader, which
    fails on it (and, with ``by_name=True``, loads nothing without a word).
    `caffeport.convert` calls this on the final name before converting; the
    temporary file it writes through keeps every suffix, so the writer's own
    check sees the same ending.
    """
    name = os.fspath(path)
    if save_model and not name.endswith(MODEL_SUFFIX):
        raise option_error(OutputError, "{save_model} writes a whole Keras model, which Keras only reads from a "
                           "{suffix} file: name the output *.keras", fill={"suffix": MODEL_SUFFIX}, path=name)
    if not save_model and name.endswith(MODEL_SUFFIX):
        raise option_error(OutputError, "a {suffix} file holds a whole model: pass {save_model}, or name the output "
                           "*{weights} for weights only", fill={"suffix": MODEL_SUFFIX, "weights": WEIGHTS_SUFFIX},
                           path=name)
    if not save_model and not name.endswith(WEIGHTS_SUFFIX):
        raise option_error(OutputError, "Keras 3 reads weights only from files named *{weights} (or pass "
                           "{save_model} for *.keras)", fill={"weights": WEIGHTS_SUFFIX}, path=name)


def _record(net: Net, report: AssignReport) -> None:
    """The assignment report as report entries (shown with -v) and warnings (always shown by the summary)."""
    entries = [ReportEntry(name, "keras-assigned") for name in report.assigned]
    entries += [ReportEntry(name, "keras-unloaded", "Keras layer with weights and no converted weights of its name: "
                            "left at its initial values") for name in report.unloaded]
    entries += [ReportEntry(name, "keras-unused", "no Keras layer with weights of this name: not written")
                for name in report.unused]
    entries += [ReportEntry(m.layer, "keras-mismatch", str(m)) for m in report.mismatches]
    entries += [ReportEntry(name, "keras-by-position", "variable names differ from the converted ones")
                for name in report.by_position]
    entries += [ReportEntry(m.layer, "keras-eps-mismatch", str(m)) for m in report.eps_mismatches]
    net.report.extend(entries)
    if report.unloaded:
        net.warnings.append("Keras layers left at their initial values (no converted weights of that name): "
                            + ", ".join(report.unloaded))
    if report.unused:
        net.warnings.append("converted layers no Keras layer takes (not written): "
                            + ", ".join(report.unused))
    if report.mismatches:
        net.warnings.append("Keras layers not loaded because shapes differ: " + "; ".join(map(str, report.mismatches)))
    if report.eps_mismatches:
        net.warnings.append("BatchNormalization epsilon differs from Caffe's: "
                            + "; ".join(map(str, report.eps_mismatches)))


def _save(model: Any, path: Path, save_model: bool) -> None:
    """Save to ``path``: `caffeport.io.output.atomic_output` keeps every suffix of the target
    (``.weights.h5``, ``.keras``) in its temporary name, which is what Keras checks."""
    _keras_save(model, path, save_model)


def _add_metadata(net: Net, path: Path) -> None:
    """Record the conversion in the ``.weights.h5`` file Keras wrote, as the keras-h5 format does."""
    try:
        import h5py

        with h5py.File(path, "r+") as f:
            f.attrs["caffeport"] = json.dumps(conversion_metadata(net), sort_keys=True)
    except OSError as exc:
        raise OutputError(f"cannot add caffeport's metadata to the file Keras wrote ({exc})", path=path) from exc


def _keras_save(model: Any, path: Path, save_model: bool) -> None:
    try:
        if save_model:
            model.save(path, overwrite=True)
        else:
            model.save_weights(path, overwrite=True)
    except (ValueError, TypeError, NotImplementedError) as exc:  # e.g. a custom layer without get_config
        raise OutputError(f"Keras cannot save this model: {type(exc).__name__}: {exc}", path=path) from exc
