"""`convert`: read, transform for a backend, export in a format. The one path CLI and API share."""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from caffeport.errors import CaffeportError, OutputError, option_error
from caffeport.exporters import EXPORTERS, Exporter, ExportOptions, load_exporters
from caffeport.exporters.registry import check_export_options, format_for_name
from caffeport.io.output import atomic_output, block_deferred_signals, check_output_path
from caffeport.ir import Net, ReportEntry
from caffeport.layers.layout import REPORT_LABELS
from caffeport.readers import nonfinite_warnings, read
from caffeport.transforms import Options, transform

if TYPE_CHECKING:  # the onnx format's own option type: conversion imports no format's module
    from caffeport.onnx.preprocessing import Preprocessing

PathLike = str | os.PathLike[str]


@dataclass
class ConvertResult:
    """What a conversion did: the transformed net and where it was written."""

    net: Net
    format: str
    backend: str
    output: Path | None

    @property
    def report(self) -> list[ReportEntry]:
        return self.net.report

    @property
    def batchnorm_eps(self) -> dict[str, float]:
        return dict(self.net.conversion.batchnorm_eps)

    @property
    def name_map(self) -> dict[str, str]:
        return dict(self.net.conversion.name_map)

    @property
    def warnings(self) -> list[str]:
        return self.net.warnings

    def summary(self) -> str:
        """A few lines: counts of what was done, eps values, match problems, warnings."""
        weighted = [layer for layer in self.net.layers if layer.blobs]
        actions = Counter(entry.action for entry in self.report)
        lines = [f"{len(weighted)} layers with weights ({sum(la.num_weights for la in weighted):,} values) "
                 f"as {self.format}, backend {self.backend}"]
        done = [f"{actions[a]} {label}" for a, label in REPORT_LABELS.items() if actions[a]]
        if done:
            lines.append("transforms: " + ", ".join(done))
        if self.batchnorm_eps:
            lines.append(eps_hint(self.batchnorm_eps, self.format))
        match = self.net.match
        if match is not None and match.missing_weights:
            lines.append("no weights in the caffemodel for: " + ", ".join(match.missing_weights))
        if match is not None and match.unused_weights:
            lines.append("caffemodel weights not in the prototxt (not written): " + ", ".join(match.unused_weights))
        lines.extend(f"warning: {w}" for w in dict.fromkeys(self.warnings))
        if self.output is not None:
            lines.append(f"wrote {self.output}")
        return "\n".join(lines)


def eps_hint(eps: dict[str, float], format: str) -> str:
    """What a user of ``format`` must know of Caffe's BatchNorm eps: the values that differ from the target's default.

    Keras' default (1e-3) differs from Caffe's (1e-5), so every Keras user must
    pass it; PyTorch's and Flax's equal Caffe's, so only a model trained with
    another value (RetinaFace's 2e-5) needs it said.
    """
    values = sorted(set(eps.values()))
    listed = ", ".join(f"{v:g}" for v in values)
    exporter = load_exporters(format).get(format)
    target = exporter.eps if exporter is not None else None  # (the format's own `Exporter.eps`)
    if target is not None and target.code_file is not None:
        return f"BatchNorm eps: {listed}, set in the generated {target.code_file}: nothing to set"
    if target is None:
        return f"BatchNorm eps: {listed} (stored with the weights, batchnorm_eps)"
    framework, build, default, where = target.framework, target.build, target.default, target.where
    differ = {name: v for name, v in eps.items() if not math.isclose(v, default, rel_tol=1e-6)}
    if not differ:
        return f"BatchNorm eps: {listed} everywhere, {framework}'s default: nothing to set"
    by_value: dict[float, list[str]] = {}
    for name, value in differ.items():
        by_value.setdefault(value, []).append(name)
    parts = []
    for value, names in sorted(by_value.items()):
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        parts.append(f"{value:g} for {shown}" if len(differ) < len(eps) or len(by_value) > 1 else f"{value:g}")
    scope = "every BatchNorm" if len(differ) == len(eps) and len(by_value) == 1 else "these layers"
    return (f"BatchNorm eps: {'; '.join(parts)}: {framework}'s default is {default:g}, so build {scope} with "
            f"{build} (per layer: {where})")


def check_format_fits(exporter: Exporter, backend: str, output: PathLike | None) -> None:
    """Refuse a backend whose layout the format would write wrongly, and an output named like another format.

    ``-f flax --backend torch`` would store PyTorch names and OIHW kernels under
    Flax's tree; ``-o w.h5 -f safetensors`` would give a safetensors file a Keras
    name that every tool then misreads.
    """
    if exporter.passes and backend not in exporter.backends:  # the format's own backends: not a layout question
        raise option_error(CaffeportError, "format {name} takes {backend=}NAME from {fits}, not {chosen} (it lays "
                           "out the weights itself)",
                           fill={"name": exporter.name, "chosen": backend, "fits": ", ".join(exporter.backends)})
    if exporter.backends is not None and backend not in exporter.backends:
        raise option_error(CaffeportError, "format {name} does not write the {chosen} backend's layout: choose "
                           "{backend=}NAME from {fits} (or another format: {format=safetensors} and {format=npz} "
                           "store any layout)",
                           fill={"name": exporter.name, "chosen": backend, "fits": ", ".join(exporter.backends)})
    if output is None:
        return
    name = os.fspath(output)
    named_like = format_for_name(name)
    if named_like is not None and named_like != exporter.name and exporter.directory:
        raise option_error(OutputError, "the name says {other} ({other_suffix}), but the format {name} writes a "
                           "folder: give a folder name (e.g. mymodel/), or pass {format=" + named_like + "}",
                           path=name, fill={"other": named_like, "other_suffix": EXPORTERS[named_like].suffix,
                                            "name": exporter.name})
    if named_like is not None and named_like != exporter.name:
        raise option_error(OutputError, "the name says {other} ({other_suffix}), but the format is {name}: name it "
                           "*{suffix}, or pass {format=" + named_like + "}", path=name,
                           fill={"other": named_like, "other_suffix": EXPORTERS[named_like].suffix,
                                 "name": exporter.name, "suffix": exporter.suffix})


def convert(
    caffemodel: PathLike | None = None,
    prototxt: PathLike | None = None,
    output: PathLike | None = None,
    *,
    format: str = "keras-h5",
    backend: str | None = None,
    include_weightless: bool = False,
    skip_unknown: bool = False,
    depthwise: str = "depthwise",
    force: bool = False,
    phase: str = "TEST",
    keras_model: str | None = None,
    allow_partial: bool = False,
    save_model: bool = False,
    progress: Callable[[int, int, int, int], None] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    ssd_heads: bool = False,
    matlab: bool = False,
    external_data: bool | None = None,
    preprocessing: Preprocessing | None = None,
) -> ConvertResult:
    """Convert a Caffe model's weights.

    Reads ``caffemodel`` (and ``prototxt``, which decides the layers and makes
    shapes known: needed for the flatten reorder and PReLU alpha shapes),
    applies ``backend``'s passes (the format's default when None) and, when
    ``output`` is given, writes ``format`` there atomically: a temporary file
    beside it renamed on success, never over an existing file unless ``force``,
    never over an input. ``keras_model``, ``allow_partial`` and ``save_model``
    are for formats written against a concrete Keras model (``keras3``); ``opset``,
    ``dynamic_batch``, ``ssd_heads`` and ``external_data`` (a ``.onnx.data`` file) for ``onnx``: each format lists
    the options it reads (`Exporter.options`), and one given to a format that does not is refused before any
    work, as is an output name the format's own check refuses (`Exporter.check`). ``matlab`` rewrites a
    MATLAB-trained net (MTCNN) for row-major images before the backend's passes
    (`caffeport.transforms.matlab`), for every format. ``preprocessing`` (``onnx`` only): the image input's
    mean, scale and channel swap, recorded in the model or baked into its graph (`caffeport.onnx.preprocessing`).
    """
    exporter = load_exporters(format).get(format)
    if exporter is None:
        raise CaffeportError(f"unknown format {format!r}; choose one of: {', '.join(sorted(load_exporters()))}")
    backend = backend or exporter.default_backend
    check_format_fits(exporter, backend, output)
    options = ExportOptions(
        include_weightless=include_weightless, keras_model=keras_model, allow_partial=allow_partial,
        save_model=save_model, progress=progress, opset=opset, dynamic_batch=dynamic_batch, ssd_heads=ssd_heads,
        external_data=external_data, preprocessing=preprocessing, output=None if output is None else Path(output),
        force=force)
    check_export_options(exporter, options)
    if output is not None:  # fail before the slow part, not after it
        check_output_path(output, force=force, inputs=[caffemodel, prototxt], directory=exporter.directory)
        if exporter.check is not None:
            exporter.check(Path(output), options)
    net = read(caffemodel, prototxt, phase=phase, check_values=False)
    # the NaN/Inf check reads every weight once: run beside the export, it overlaps the writes instead of
    # delaying their start; its warnings go where `read` would have put them, after the reader's own
    checked_at = len(net.warnings)
    stop = threading.Event()
    pool = ThreadPoolExecutor(1, thread_name_prefix="caffeport-check", initializer=block_deferred_signals)
    try:
        checked = pool.submit(nonfinite_warnings, net, threads=1, stop=stop)
        converted = transform(net, backend, Options(depthwise=depthwise, skip_unknown=skip_unknown, matlab=matlab),
                              passes=exporter.passes.get(backend))
        target = None
        if output is not None:
            try:
                with atomic_output(output, force=force, inputs=[caffemodel, prototxt],
                                   directory=exporter.directory) as tmp:
                    exporter.write(converted, tmp, options)
            except BaseException:
                for companion in options.companions:  # both files or neither (an ONNX model and its data)
                    companion.unlink(missing_ok=True)
                raise
            target = Path(output)
        converted.warnings[checked_at:checked_at] = checked.result()
    finally:  # on an error or Ctrl-C, the scan stops at its next block instead of running to the end
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
    return ConvertResult(net=converted, format=format, backend=backend, output=target)

