"""The ``caffeport`` command line.

One subcommand per job, each a small function registered in `COMMANDS`, so
new ones (``convert``) slot in beside ``inspect`` and ``mean``. Bad input
never shows a traceback: a `CaffeportError` prints one line naming the file
(and layer, byte offset or line) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

import numpy as np

from caffeport import __version__
from caffeport.convert import convert
from caffeport.describe import table, to_json
from caffeport.errors import CaffeportError
from caffeport.exporters import load_exporters
from caffeport.output import atomic_output
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


@command("convert")
def run_convert(args: argparse.Namespace) -> int:
    result = convert(
        args.model, args.prototxt, args.output, format=args.format, backend=args.backend,
        include_weightless=args.include_weightless, skip_unknown=args.skip_unknown,
        depthwise="grouped" if args.depthwise_as_grouped else "depthwise", force=args.force,
    )
    if args.verbose:
        for entry in result.report:
            print(f"  {entry}")
    print(result.summary())
    return 0


@command("mean")
def run_mean(args: argparse.Namespace) -> int:
    blob = read_blob(args.mean)
    array = np.asarray(blob, dtype=np.float32)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    with atomic_output(args.output, force=args.force, inputs=[args.mean]) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array)
    print(f"wrote {args.output}: mean of shape {array.shape} (C, H, W, BGR as Caffe stores it), float32",
          file=sys.stderr)
    return 0


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
        "(channels_first with flipped kernels), torch (Caffe layouts, PyTorch names), caffe (raw blobs).",
    )
    p.add_argument("model", help="the .caffemodel (binary or HDF5 snapshot)")
    p.add_argument("-p", "--prototxt", help="deploy prototxt (recommended)")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("-f", "--format", default="keras-h5", choices=sorted(load_exporters()),
                   help="output format (default: keras-h5)")
    p.add_argument("--backend", choices=sorted(BACKENDS), help="target backend (default: the format's own)")
    p.add_argument("-n", "--include-weightless", action="store_true",
                   help="also write layers that have no weights")
    p.add_argument("--skip-unknown", action="store_true",
                   help="leave out layers of unknown types instead of passing their blobs through")
    p.add_argument("--depthwise-as-grouped", action="store_true",
                   help="write depthwise convolutions as grouped Conv2D kernels, not DepthwiseConv2D")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("-v", "--verbose", action="store_true", help="print what was done to every layer")

    p = sub.add_parser(
        "mean",
        help="convert a .binaryproto mean file to .npy",
        description="Save the blob of a .binaryproto mean file as a float32 .npy array, (C, H, W) in Caffe's "
        "BGR channel order (a leading batch axis of 1 is dropped).",
    )
    p.add_argument("mean", help="the .binaryproto file")
    p.add_argument("-o", "--output", required=True, help="the .npy file to write")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
