"""A drop-in for caffe_weight_converter (pierluigiferrari/caffe_weight_converter), built on `caffeport.convert`.

That tool needed a working Caffe, which nobody can install any more, yet
scripts and notebooks still call it. This module keeps its interface so they
can switch by changing only the import:

- ``convert_caffemodel_to_keras(output_filename, prototxt_filename,
  caffemodel_filename, ...)`` writes Keras HDF5 weights to
  ``output_filename + ".h5"`` and returns None;
- ``convert_caffemodel_to_dict(prototxt_filename, caffemodel_filename,
  out_path=None, verbose=False)`` returns the list of layer dicts (see
  `caffeport.exporters.pickle`) and, given ``out_path``, pickles it to
  ``out_path + ".pkl"``;
- the command line ``caffe-weight-converter OUT_FILE PROTOTXT CAFFEMODEL
  [-f hdf5|pickle] [-n] [-u] [-b tf|th|cntk] [-v]`` (also ``python -m
  caffeport.compat``).

As with the old tool the extension is always appended, even to a name that
already has one (``w.h5`` becomes ``w.h5.h5``): scripts then look for the file
where they always did. An existing output is replaced without asking, as the
old tool did, but never an input file, and a failed run leaves no partial file.

Both functions are thin calls of `caffeport.convert` (formats ``keras-h5``
and ``pickle``), so the weights are caffeport's, not the old tool's. Where
that tool wrote wrong weights, these are right: BatchNorm statistics are
divided by Caffe's stored scale factor; a BatchNorm is joined with the Scale
that consumes its output, not with whatever layer comes next in the file;
fully connected layers after a spatial blob get their rows in Keras'
channels-last flatten order; depthwise convolutions and PReLU get the shapes
Keras' layers expect; names with ``/`` are made safe instead of becoming
nested HDF5 groups. Layer types caffeport knows (PReLU, Scale, Embed, LSTM,
...) are converted, so ``include_unknown_layer_types=False`` (``-u``) drops
fewer layers than it did. ``keras_backend`` also accepts ``'th'`` and
``'cntk'``, which the old tool refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from caffeport.conversion import ConvertResult, convert
from caffeport.errors import CaffeportError, for_cli
from caffeport.exporters.pickle import layer_records
from caffeport.io.output import INTERRUPTED, exit_on_termination_signals, guarded_stdout

PathLike = str | os.PathLike[str]

#: the old tool's ``keras_backend`` values and the caffeport backends that write for them
KERAS_BACKENDS: dict[str, str] = {"tf": "tensorflow", "th": "theano", "cntk": "cntk"}
#: the old tool's ``--format`` values: (caffeport format, extension appended to OUT_FILE)
FORMATS: dict[str, tuple[str, str]] = {"hdf5": ("keras-h5", ".h5"), "pickle": ("pickle", ".pkl")}

PROG = "caffe-weight-converter"
#: this command line's flags for the options caffeport's messages name (see `caffeport.errors.for_cli`)
CLI_FLAGS: dict[str, str] = {"include_weightless": "-n/--include_non_weight", "skip_unknown": "-u/--skip_unknown",
                             "backend": "-b/--backend", "format": "-f/--format"}


class KerasBackendError(CaffeportError, ValueError):
    """An unknown ``keras_backend``.

    Also a `ValueError`: that is what the old tool raised for it, and scripts
    may catch it.
    """


def _with_extension(stem: PathLike, extension: str) -> str:
    """``stem`` with ``extension`` appended unconditionally, as the old tool's ``'{}.h5'.format(...)`` did."""
    return f"{os.fspath(stem)}{extension}"


def _backend(keras_backend: str) -> str:
    try:
        return KERAS_BACKENDS[keras_backend]
    except (KeyError, TypeError):
        raise KerasBackendError(
            f"unknown keras_backend {keras_backend!r}; choose one of: {', '.join(KERAS_BACKENDS)}") from None


def _print_result(result: ConvertResult, verbose: bool) -> None:
    """What happened: every layer with ``verbose``, then caffeport's summary (eps values, problems, the file)."""
    if verbose:
        for entry in result.report:
            print(f"  {entry}")
        if result.format == "pickle":
            for layer in result.net.layers:
                shapes = ", ".join(str(tuple(blob.shape)) for blob in layer.blobs) or "no weights"
                print(f"  {layer.name} ({layer.type}): {shapes}")
    print(result.summary())


def _to_keras(output_filename: PathLike, prototxt_filename: PathLike, caffemodel_filename: PathLike, *,
              include_weightless: bool, skip_unknown: bool, keras_backend: str) -> ConvertResult:
    backend = _backend(keras_backend)  # before any work, as the old tool checked it first
    keras_format, extension = FORMATS["hdf5"]
    return convert(caffemodel_filename, prototxt_filename, _with_extension(output_filename, extension),
                   format=keras_format, backend=backend, include_weightless=include_weightless,
                   skip_unknown=skip_unknown, force=True)


def _to_pickle(prototxt_filename: PathLike, caffemodel_filename: PathLike, out_path: PathLike | None) -> ConvertResult:
    pickle_format, extension = FORMATS["pickle"]
    output = None if out_path is None else _with_extension(out_path, extension)
    return convert(caffemodel_filename, prototxt_filename, output, format=pickle_format, backend="pycaffe",
                   force=True)


def convert_caffemodel_to_keras(
    output_filename: PathLike,
    prototxt_filename: PathLike,
    caffemodel_filename: PathLike,
    include_layers_without_weights: bool = False,
    include_unknown_layer_types: bool = True,
    keras_backend: str = "tf",
    verbose: bool = True,
) -> None:
    """Write the model's weights to ``output_filename + ".h5"`` for ``model.load_weights(path, by_name=True)``.

    The old tool's signature and defaults. ``include_layers_without_weights``
    also writes empty groups for layers without weights;
    ``include_unknown_layer_types=False`` leaves out layers of types caffeport
    cannot convert instead of passing their blobs through unchanged;
    ``keras_backend`` is ``'tf'`` (channels_last), ``'th'`` (channels_first,
    flipped kernels) or ``'cntk'`` (as ``'tf'``). A summary is always printed
    (with the BatchNorm eps values to build Keras' layers with), each layer's
    conversion too with ``verbose``. Returns None, as the old tool did.

    Raises `CaffeportError` for bad input, `KerasBackendError` (a
    `ValueError` too) for an unknown ``keras_backend``.
    """
    result = _to_keras(output_filename, prototxt_filename, caffemodel_filename,
                       include_weightless=include_layers_without_weights,
                       skip_unknown=not include_unknown_layer_types, keras_backend=keras_backend)
    _print_result(result, verbose)


def convert_caffemodel_to_dict(
    prototxt_filename: PathLike,
    caffemodel_filename: PathLike,
    out_path: PathLike | None = None,
    verbose: bool = False,
) -> list[dict[str, Any]]:
    """The model as a list of layer dicts (``name``, ``type``, ``weights``, ``bottoms``, ``tops``), as the old tool.

    With ``out_path`` the list is also pickled to ``out_path + ".pkl"``. The
    weights are raw Caffe blobs, as writable arrays of their own (the old
    tool's were too), so the list does not keep the model file open. A
    summary is printed when a file is written or with ``verbose`` (which also
    lists every layer); otherwise layers the caffemodel has no weights for are
    reported as a warning, since their ``weights`` lists are empty (Caffe
    would have handed out its random initial values instead).
    """
    result = _to_pickle(prototxt_filename, caffemodel_filename, out_path)
    if verbose or out_path is not None:
        _print_result(result, verbose)
    elif result.net.match is not None and result.net.match.missing_weights:
        warnings.warn("no weights in the caffemodel for: " + ", ".join(result.net.match.missing_weights)
                      + " (their 'weights' lists are empty)", stacklevel=2)
    return layer_records(result.net, copy=True)


# ---------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Convert a Caffe model's weights to Keras HDF5 weights (for load_weights(..., by_name=True)) "
        "or to a pickled list of per-layer dicts holding numpy arrays. Works without Caffe; a replacement for "
        "caffe_weight_converter with the same arguments.",
    )
    parser.add_argument("out_file", help="the output path without extension: '.h5' or '.pkl' is appended "
                        "(an existing file of that name is replaced)")
    parser.add_argument("prototxt", help="the .prototxt defining the net (the deploy one): it decides the layers "
                        "and the blob shapes")
    parser.add_argument("caffemodel", help="the .caffemodel holding the trained weights")
    parser.add_argument("-f", "--format", default="hdf5", choices=list(FORMATS),
                        help="hdf5: Keras HDF5 weights, converted to Keras' layouts; pickle: a list with one dict per "
                        "layer (name, type, weights as raw Caffe numpy arrays, bottoms and tops as (name, shape) "
                        "pairs) for your own processing (default: %(default)s)")
    parser.add_argument("-n", "--include_non_weight", "--include-non-weight", action="store_true",
                        help="hdf5 only: also write an empty group for each layer without weights (ReLU, Pooling, "
                        "...); not needed when loading with by_name=True")
    parser.add_argument("-u", "--skip_unknown", "--skip-unknown", action="store_true",
                        help="hdf5 only: leave out layers of types the converter does not know instead of writing "
                        "their blobs unchanged; try without it first")
    parser.add_argument("-b", "--backend", default="tf", choices=list(KERAS_BACKENDS),
                        help="hdf5 only: the Keras backend the weights are for: tf (channels_last), th (Theano: "
                        "channels_first, flipped kernels) or cntk (as tf) (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list what was done to every layer")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``caffe-weight-converter`` command: 0 on success, 1 (and one line on stderr) on bad input, 130 after
    Ctrl-C (returned: the entry point, `caffeport.__main__.weight_converter`, then ends the process by SIGINT)."""
    exit_on_termination_signals()  # SIGTERM & co. unwind like Ctrl-C, so a partial output is removed
    args = build_parser().parse_args(argv)
    try:
        with guarded_stdout():
            if args.format == "hdf5":
                result = _to_keras(args.out_file, args.prototxt, args.caffemodel,
                                   include_weightless=args.include_non_weight, skip_unknown=args.skip_unknown,
                                   keras_backend=args.backend)
            else:  # the layer dicts are only needed in the file here: no copies for a return value
                result = _to_pickle(args.prototxt, args.caffemodel, args.out_file)
            _print_result(result, args.verbose)
    except CaffeportError as exc:
        print(f"{PROG}: error: {for_cli(exc, CLI_FLAGS)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return INTERRUPTED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
