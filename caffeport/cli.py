"""The ``caffeport`` command line.

One subcommand per job, each a small function registered in `COMMANDS`, so
new ones (``convert``, ``check``) slot in beside ``inspect`` and ``mean``. Bad input
never shows a traceback: a `CaffeportError` prints one line naming the file
(and layer, byte offset or line) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

# caffeport does no linear algebra, so numpy's BLAS worker threads would only spin beside the conversion on the
# cores it uses (measured: about 0.15 s of CPU and 0.07 s of wall time of a 0.9 s VGG16 conversion on two
# cores). Set before numpy loads (`import caffeport` does not load it); a value the user set wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from caffeport import __version__
from caffeport.conversion import convert
from caffeport.describe import table, to_json
from caffeport.errors import CaffeportError
from caffeport.exporters import load_exporters
from caffeport.keras_model import check_weights_file, load_keras_model
from caffeport.output import atomic_output, exit_on_termination_signals
from caffeport.progress import ProgressBar
from caffeport.progress import wanted as progress_wanted
from caffeport.readers import read, read_blob
from caffeport.readers.files import sniff_file
from caffeport.transforms import BACKENDS

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


def command(name: str) -> Callable[[Command], Command]:
    def register(func: Command) -> Command:
        COMMANDS[name] = func
        return func

    return register


@command("inspect")
def run_inspect(args: argparse.Namespace) -> int:
    model, prototxt = args.model, args.prototxt
    if prototxt is None and sniff_file(model) == "text":
        model, prototxt = None, model  # a prototxt alone: structure without weights
    net = read(model, prototxt)
    if args.json:
        json.dump(to_json(net), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(table(net))
    return 0


def _cwd_on_path() -> None:
    """Put the working directory first on ``sys.path``, as ``python -m`` does.

    ``--keras-model tests.keras_models:lenet`` then finds a module of the
    project the user stands in, whether caffeport runs as ``python -m
    caffeport`` or as the ``caffeport`` console script (whose ``sys.path``
    starts with the script's own directory instead).
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


@command("convert")
def run_convert(args: argparse.Namespace) -> int:
    if args.keras_model or args.save_model or args.allow_partial:
        if args.format != "keras3":
            raise CaffeportError("--keras-model, --save-model and --allow-partial are for -f keras3")
        _cwd_on_path()
    size = os.path.getsize(args.model) if os.path.isfile(args.model) else 0
    bar = ProgressBar() if progress_wanted(size, args.quiet) else None
    try:
        result = convert(
            args.model, args.prototxt, args.output, format=args.format, backend=args.backend,
            include_weightless=args.include_weightless, skip_unknown=args.skip_unknown,
            depthwise="grouped" if args.depthwise_as_grouped else "depthwise", force=args.force,
            keras_model=args.keras_model, allow_partial=args.allow_partial, save_model=args.save_model,
            progress=bar,
        )
    finally:
        if bar is not None:
            bar.close()
    if args.quiet:
        return 0
    if args.verbose:
        for entry in result.report:
            print(f"  {entry}")
    print(result.summary())
    return 0


@command("check")
def run_check(args: argparse.Namespace) -> int:
    _cwd_on_path()
    model = load_keras_model(args.keras_model)
    report = check_weights_file(args.weights, model)
    print(report)
    if report.clean:
        print(f"{args.weights}: every weighted layer matches {args.keras_model}")
        return 0
    print(f"{args.weights}: does not fit {args.keras_model}: load_weights(by_name=True) would leave the layers above "
          "wrong without a word")
    return 1


@command("mean")
def run_mean(args: argparse.Namespace) -> int:
    blob = read_blob(args.mean)
    array = np.asarray(blob, dtype=np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    layout, order = "C, H, W", "BGR as Caffe stores it"
    if (args.rgb or args.hwc) and array.ndim != 3:
        raise CaffeportError(f"--rgb and --hwc need a (C, H, W) mean, this one is {array.shape}", path=args.mean)
    if args.rgb:
        array = array[::-1]  # Caffe's mean images are BGR, like the OpenCV-loaded images they were made from
        order = "RGB"
    if args.hwc:
        array = array.transpose(1, 2, 0)
        layout = "H, W, C"
    array = np.ascontiguousarray(array)
    with atomic_output(args.output, force=args.force, inputs=[args.mean]) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    print(f"wrote {args.output}: mean of shape {array.shape} ({layout}, {order}), float32", file=sys.stderr)
    return 0


def _format_name(name: str) -> str:
    """An exporter's name; installed plugins are searched only for a name that is not one of ours."""
    try:
        if name not in load_exporters(name):
            raise argparse.ArgumentTypeError(
                f"unknown format {name!r} (choose from {', '.join(sorted(load_exporters()))})")
    except argparse.ArgumentTypeError:
        raise
    except Exception as exc:  # a plugin that fails to import: say which and why, not just "invalid value"
        raise argparse.ArgumentTypeError(f"loading the format plugins failed: {type(exc).__name__}: {exc}") from exc
    return name


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="caffeport",
        description="Read trained Caffe models (.caffemodel, .prototxt, .binaryproto) without Caffe "
        "and export their weights.",
    )
    parser.add_argument("--version", action="version", version=f"caffeport {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "inspect",
        help="list a model's layers, shapes, blobs and parameters",
        description="List a model's layers: type, bottoms -> tops with inferred shapes, blob shapes and dtypes, "
        "parameter counts and key parameters, then totals, the file format generation and, with a prototxt, "
        "which weights matched which layers.",
    )
    p.add_argument("model", help="a .caffemodel (binary or HDF5 snapshot), or a .prototxt alone")
    p.add_argument("-p", "--prototxt", help="deploy prototxt: decides the layers; weights are matched by name")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser(
        "convert",
        help="convert a model's weights to another framework's format",
        description="Convert a Caffe model's weights. The deploy prototxt (-p) decides the layers and makes blob "
        "shapes known, which the flatten reorder of fully connected layers and PReLU alpha shapes need. The "
        "output is written to a temporary file and renamed when complete; an existing file is only replaced "
        "with --force.",
        epilog="backends: tensorflow (Keras channels_last, default), cntk (same), channels_first, theano "
        "(channels_first with flipped kernels), torch (Caffe layouts, PyTorch names), caffe (raw blobs), "
        "pycaffe (raw blobs in the shapes Caffe's layers hold).",
    )
    p.add_argument("model", help="the .caffemodel (binary or HDF5 snapshot)")
    p.add_argument("-p", "--prototxt", help="deploy prototxt (recommended)")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("-f", "--format", default="keras-h5", type=_format_name,
                   help=f"output format: {', '.join(sorted(load_exporters('keras-h5')))}, or one a plugin "
                   "registers (default: keras-h5)")
    p.add_argument("--backend", choices=sorted(BACKENDS), help="target backend (default: the format's own)")
    p.add_argument("-n", "--include-weightless", action="store_true",
                   help="also write layers that have no weights")
    p.add_argument("--skip-unknown", action="store_true",
                   help="leave out layers of unknown types instead of passing their blobs through")
    p.add_argument("--depthwise-as-grouped", action="store_true",
                   help="write depthwise convolutions as grouped Conv2D kernels, not DepthwiseConv2D")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("-v", "--verbose", action="store_true", help="print what was done to every layer")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing unless there is an error (and no progress bar)")
    p.add_argument("--keras-model", metavar="SPEC",
                   help="-f keras3: the Keras model to write for, as module.path:function (called with no "
                   "arguments; the module is found on sys.path, which starts with the working directory) or a saved "
                   ".keras file; its layer names must be the Caffe layer names")
    p.add_argument("--save-model", action="store_true",
                   help="-f keras3: write the whole model with its weights (output *.keras) instead of *.weights.h5")
    p.add_argument("--allow-partial", action="store_true",
                   help="-f keras3: load the layers whose shapes fit and report the others, instead of failing")

    p = sub.add_parser(
        "check",
        help="compare a converted keras-h5 file with a Keras model, layer by layer",
        description="Compare a file written by 'caffeport convert -f keras-h5' with a Keras model by layer name and "
        "weight shape, without loading it: Keras' load_weights(by_name=True) silently skips what does not match. "
        "Prints the Keras layers the file would leave at their initial values, the file's layers the model does "
        "not take and every shape mismatch; exits 1 when there is any, 0 when everything matches.",
    )
    p.add_argument("weights", metavar="CONVERTED.h5", help="the converted keras-h5 file")
    p.add_argument("--keras-model", metavar="SPEC", required=True,
                   help="module.path:function (called with no arguments; found on sys.path, which starts with the "
                   "working directory) or a saved .keras file")

    p = sub.add_parser(
        "mean",
        help="convert a .binaryproto mean file to .npy",
        description="Save the blob of a .binaryproto mean file as a float32 .npy array, (C, H, W) in Caffe's "
        "BGR channel order (a leading batch axis of 1 is dropped), or as --rgb and --hwc ask.",
    )
    p.add_argument("mean", help="the .binaryproto file")
    p.add_argument("-o", "--output", required=True, help="the .npy file to write")
    p.add_argument("--rgb", action="store_true", help="reverse the channels: BGR (Caffe) -> RGB")
    p.add_argument("--hwc", action="store_true", help="save (H, W, C), channels last, instead of (C, H, W)")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    exit_on_termination_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C, so partial outputs are removed
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except CaffeportError as exc:
        print(f"caffeport: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("caffeport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
