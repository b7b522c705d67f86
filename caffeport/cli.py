"""The ``caffeport`` command line.

One subcommand per job (``inspect``, ``convert``, ``mean``, ``check``, ``run``,
``verify``), each a small function registered in `COMMANDS`. Bad input
never shows a traceback: a `CaffeportError` prints one line naming the file
(and layer, byte offset or line) and exits 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

# caffeport does no linear algebra, so numpy's BLAS worker threads would only spin beside the conversion on the
# cores it uses (measured: about 0.15 s of CPU and 0.07 s of wall time of a 0.9 s VGG16 conversion on two
# cores). Set before numpy loads (`import caffeport` does not load it); a value the user set wins.
# ``caffeport run`` does: its convolutions are matrix products, so it keeps BLAS's threads.
if sys.argv[1:2] not in (["run"], ["verify"]):
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np

from caffeport import __version__
from caffeport.conversion import convert
from caffeport.describe import table, to_json
from caffeport.errors import CaffeportError, for_cli
from caffeport.exporters import load_exporters
from caffeport.exporters.npz import check_member_name
from caffeport.exporters.registry import formats_with
from caffeport.forward import net_outputs, run
from caffeport.io.output import INTERRUPTED, atomic_output, exit_on_termination_signals, guarded_stdout, interruption
from caffeport.layers.blobs import blob_problems
from caffeport.onnx.preprocessing import preprocessing_from_options
from caffeport.progress import ProgressBar
from caffeport.progress import wanted as progress_wanted
from caffeport.readers import read, read_blob
from caffeport.readers.files import model_file, naming_file, sniff_file
from caffeport.readers.preprocess import image_input, parse_mean
from caffeport.transforms import BACKENDS, Options, transform

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
    return 1 if blob_problems(net) else 0


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
    # (an option the format does not read, --opset for -f npz, is refused by convert: the format lists its own)
    if args.mean is not None or args.scale is not None or args.swap_rb or args.bake_preprocessing or args.image_input:
        load_exporters(args.format)
        owners = formats_with("preprocessing")
        if args.format not in owners:
            raise CaffeportError("--mean, --scale, --swap-rb, --bake-preprocessing and --image-input are for "
                                 f"{' and '.join(f'-f {name}' for name in owners)}, not -f {args.format}")
    preprocessing = preprocessing_from_options(args.mean, args.scale, args.swap_rb, args.bake_preprocessing,
                                               args.image_input)
    if args.keras_model:
        _cwd_on_path()
    size = os.path.getsize(args.model) if os.path.isfile(args.model) else 0
    bar = ProgressBar() if progress_wanted(size, args.quiet) else None
    try:
        result = convert(
            args.model, args.prototxt, args.output, format=args.format, backend=args.backend,
            include_weightless=args.include_weightless, skip_unknown=args.skip_unknown,
            depthwise="grouped" if args.depthwise_as_grouped else "depthwise", force=args.force,
            keras_model=args.keras_model, allow_partial=args.allow_partial, save_model=args.save_model,
            progress=bar, opset=args.opset, dynamic_batch=args.dynamic_batch, ssd_heads=args.ssd_heads,
            matlab=args.matlab, preprocessing=preprocessing, external_data=True if args.external_data else None,
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
    from caffeport.keras_model import check_weights_file, load_keras_model, read_weights_file  # (h5py: here)

    weights = read_weights_file(args.weights)  # a bad file fails before TensorFlow loads
    _cwd_on_path()
    model = load_keras_model(args.keras_model)
    report = check_weights_file(weights, model)
    print(report)
    if report.clean:
        print(f"{args.weights}: every weighted layer matches {args.keras_model}")
        return 0
    print(f"{args.weights}: does not fit {args.keras_model} (what loading it would do is said above)")
    return 1


def _named_values(items: list[str], what: str) -> dict[str, str]:
    """``NAME=VALUE`` arguments as a dict (a lone ``VALUE`` is named ``""``: the net's only input)."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            name, value = "", item
        if name in values:
            raise CaffeportError(f"{what} given twice for input {name or '(the only one)'!r}")
        values[name] = value
    return values


def _only_input(net_inputs: dict[str, tuple[int, ...]], what: str) -> str:
    if len(net_inputs) != 1:
        raise CaffeportError(f"the net has {len(net_inputs)} inputs ({', '.join(net_inputs)}): "
                             f"name the one meant, {what} NAME=FILE")
    return next(iter(net_inputs))


def _run_inputs(args: argparse.Namespace, net_inputs: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The arrays ``--input``, ``--image`` and ``--random`` give, by net input name."""
    inputs: dict[str, np.ndarray] = {}
    for name, path in _named_values(args.input, "--input").items():
        name = name or _only_input(net_inputs, "--input")
        try:
            inputs[name] = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CaffeportError(f"cannot read it as a .npy array ({exc})", path=path) from exc
    mean = None
    if args.mean is not None:
        parsed = parse_mean(args.mean)
        mean = read_blob(parsed) if isinstance(parsed, str) else parsed
        if getattr(args, "matlab", False) and isinstance(parsed, str) and np.ndim(mean) >= 2:
            # a MATLAB-trained net's mean image is stored as the net saw images (transposed): row-major for the
            # rewritten net, as the image it is subtracted from
            mean = np.swapaxes(np.asarray(mean), -1, -2)
    for name, path in _named_values(args.image, "--image").items():
        name = name or _only_input(net_inputs, "--image")
        if name not in net_inputs:
            raise CaffeportError(f"the net has no input named {name!r} (its inputs: {', '.join(net_inputs)})")
        if name in inputs:
            raise CaffeportError(f"input {name!r} given both as --input and as --image")
        inputs[name] = image_input(path, net_inputs[name], mean=mean, scale=args.scale, swap_rb=args.swap_rb,
                                   resize=args.resize)
    if args.random is not None:
        rng = np.random.default_rng(args.random)
        for name, shape in net_inputs.items():
            if name not in inputs:
                inputs[name] = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    return inputs


def _resize(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected H,W (two integers), got {text!r}") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"H and W must be positive, got {text!r}")
    return height, width


@command("run")
def run_forward(args: argparse.Namespace) -> int:
    net = read(args.model, args.prototxt)
    if args.matlab:  # the net rewritten for row-major images, as `convert --matlab` writes it
        net = transform(net, "caffe", Options(matlab=True))
    inputs = _run_inputs(args, {name: tuple(shape) for name, shape in net.inputs.items()})
    outputs = run(net, inputs, all_layers=args.all_layers)
    with naming_file(model_file(net)):  # before the output exists: numpy.savez would fail half-way
        for key in outputs:
            check_member_name(key, key.split("/", 1)[0], "or run without --all-layers")
    with atomic_output(args.output, force=args.force, inputs=[args.model, args.prototxt]) as tmp, \
            open(tmp, "wb") as handle:
        np.savez(handle, **outputs)
    if not args.quiet:
        for name in net_outputs(net):
            value = outputs.get(name)
            if value is not None:
                stats = f"min {value.min():.6g} max {value.max():.6g} mean {value.mean():.6g}" if value.size else ""
                print(f"{name}: {'x'.join(map(str, value.shape))} {stats}")
        extra = f" and {sum('/' in k for k in outputs)} layer tops" if args.all_layers else ""
        print(f"wrote {args.output}: {len(net_outputs(net))} net outputs{extra}", file=sys.stderr)
    return 0


@command("verify")
def run_verify(args: argparse.Namespace) -> int:
    from caffeport.verify import table

    targets = [flag for flag, value in (("CONVERTED.onnx", args.converted), ("--torch", args.torch),
                                        ("--keras", args.keras), ("--flax", args.flax)) if value is not None]
    if len(targets) != 1:
        raise CaffeportError("give exactly one model to check: CONVERTED.onnx, --torch PATH_OR_MODULE:CALLABLE, "
                             "--keras MODULE:CALLABLE or --flax PATH_OR_MODULE:CALLABLE "
                             f"({'got ' + ' and '.join(targets) if targets else 'got none'})")
    if args.rtol is None or not args.rtol >= 0:
        raise CaffeportError(f"--rtol must be a non-negative number, got {args.rtol}")
    net = read(args.model, args.prototxt)
    if args.matlab:  # the reference for a model converted with --matlab: the rewritten net, row-major inputs
        net = transform(net, "caffe", Options(matlab=True))
    _cwd_on_path()  # a module:callable spec names a module of the folder the user stands in
    if args.torch is not None:  # torch and keras are imported only for their own flag
        from caffeport.verify.torch_target import load_model, verify
        model = load_model(args.torch)
    elif args.keras is not None:
        from caffeport.verify.keras_target import load_model, verify  # type: ignore[assignment]
        model = load_model(args.keras)
    elif args.flax is not None:
        from caffeport.verify.flax_target import load_model, verify  # type: ignore[assignment]
        model = load_model(args.flax)
    else:
        from caffeport.onnx.verify import load_model, verify  # type: ignore[assignment]
        model = load_model(args.converted)
    if not (args.input or args.image or args.random is not None):
        args.random = 0
        print("inputs: --random 0 (no --input, --image or --random given)", file=sys.stderr)
    inputs = _run_inputs(args, {name: tuple(shape) for name, shape in net.inputs.items()})
    extra: dict[str, Any] = {}
    if args.converted is not None:  # an ONNX model with baked preprocessing takes the --image inputs raw
        extra["base_dir"] = os.path.dirname(os.path.abspath(args.converted))  # where its external data is
        raw = argparse.Namespace(**{**vars(args), "input": [], "random": None, "mean": None, "scale": 1.0,
                                    "swap_rb": False})
        extra["raw_images"] = _run_inputs(raw, {name: tuple(shape) for name, shape in net.inputs.items()})
    rows = verify(net, model, inputs, all_layers=args.all_layers, rtol=args.rtol, **extra)
    print(table(rows, args.rtol))
    return 0 if all(row.passed for row in rows) else 1


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
        "pycaffe (raw blobs in the shapes Caffe's layers hold). The code formats lay the weights out themselves: "
        "torch-code and flax-code take torch; keras-code takes tensorflow (NHWC, default) or channels_first (NCHW).",
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
    p.add_argument("--opset", type=int, help="-f onnx: the ONNX opset (13 to 21; default 17)")
    p.add_argument("--dynamic-batch", action="store_true",
                   help="-f onnx: a symbolic batch axis on the graph's inputs and outputs")
    p.add_argument("--ssd-heads", action="store_true",
                   help="-f onnx: stop before SSD's DetectionOutput and output its inputs (loc, conf, priors)")
    p.add_argument("--external-data", action="store_true",
                   help="-f onnx: write the weights to OUTPUT.data beside the model (ONNX external data; done "
                   "anyway when one file would reach 2 GiB)")
    p.add_argument("--matlab", action="store_true",
                   help="a MATLAB-trained model (e.g. MTCNN, trained on transposed images): write weights and code "
                   "for row-major images (kernels' H and W swapped, the first fully connected layer after a spatial "
                   "blob reordered, the input's H and W swapped)")
    p.add_argument("--allow-partial", action="store_true",
                   help="-f keras3: load the layers whose shapes fit and report the others, instead of failing")
    p.add_argument("--mean", metavar="B,G,R|MEAN.binaryproto",
                   help="-f onnx: the image input's mean, as for 'caffeport run --image' (per channel in the order "
                   "the net receives them, or a mean image): recorded in the model's metadata_props "
                   "'caffeport.preprocessing', with --bake-preprocessing subtracted by the graph")
    p.add_argument("--scale", type=float, help="-f onnx: the factor applied after the mean (as for run; default 1)")
    p.add_argument("--swap-rb", action="store_true",
                   help="-f onnx: the net receives RGB, not BGR (as for run): recorded, or baked in")
    p.add_argument("--bake-preprocessing", action="store_true",
                   help="-f onnx: put --mean, --scale and --swap-rb into the graph: its input keeps the Caffe "
                   "input's name and takes the raw image (float32 NCHW in the input's shape, 0..255, BGR as OpenCV "
                   "loads it, resized to H x W); the net reads '<input>_preprocessed'. 'caffeport verify' feeds "
                   "such a model the raw --image")
    p.add_argument("--image-input", action="append", default=[], metavar="NAME",
                   help="-f onnx: a net input the preprocessing is for (repeat; default: the net's only input)")

    p = sub.add_parser(
        "check",
        help="compare a converted keras-h5 or Keras 3 .weights.h5 file with a Keras model, layer by layer",
        description="Compare a file written by 'caffeport convert -f keras-h5' (or -f keras3) with a Keras 3 or "
        "tf_keras model, without loading it. A keras-h5 file is compared by layer name, as "
        "load_weights(by_name=True) assigns it: Keras skips layers missing on either side without a word. A Keras "
        "3 .weights.h5 file is compared by place, as load_weights assigns it: a layer whose place holds another "
        "layer's weights gets them without a word. Prints the layers that would stay at their initial values, "
        "the file's layers the model does not take, every shape mismatch and every BatchNormalization epsilon "
        "other than the one the file records; exits 1 when there is any, 0 when everything matches.",
    )
    p.add_argument("weights", metavar="CONVERTED.h5", help="the converted keras-h5 or .weights.h5 file")
    p.add_argument("--keras-model", metavar="SPEC", required=True,
                   help="module.path:function (called with no arguments; found on sys.path, which starts with the "
                   "working directory) or a saved .keras file")

    p = sub.add_parser(
        "run",
        help="run the model forward in Caffe's semantics (numpy) and save its outputs",
        description="Run a Caffe model forward with caffeport's reference implementation of Caffe's layers "
        "(numpy, float32, Caffe's own rules: ceil-mode pooling, the AVE divisor, BatchNorm's scale factor, "
        "SSD's DetectionOutput...) and save the outputs as .npz: the net's output blobs by name, and with "
        "--all-layers every layer's tops as '<layer>/<top>', taken right after that layer ran. Use it as the "
        "ground truth for a converted model. Layers the reference cannot run are listed before any work.",
        epilog="examples: caffeport run det1.caffemodel -p det1.prototxt --random 0 -o out.npz; "
        "caffeport run m.caffemodel -p deploy.prototxt --image cat.jpg --mean 104,117,123 -o out.npz --all-layers",
    )
    p.add_argument("model", help="the .caffemodel (binary or HDF5 snapshot)")
    p.add_argument("-p", "--prototxt", help="deploy prototxt (decides the layers and the input shapes)")
    p.add_argument("-o", "--output", required=True, help="the .npz file to write")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array in Caffe's layout (N, C, H, W), by net input name (repeat per input; "
                   "the name may be left out for a net with one input); any batch size")
    p.add_argument("--image", action="append", default=[], metavar="[NAME=]FILE",
                   help="an image for an input: loaded BGR (as Caffe's OpenCV-loaded training images) 0..255, "
                   "resized to the input's H x W (bilinear), then --mean subtracted and --scale applied; "
                   "needs Pillow")
    p.add_argument("--mean", metavar="B,G,R|MEAN.binaryproto",
                   help="subtracted from --image inputs: values per channel in the order the net receives "
                   "them, or a mean image")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies --image inputs after the mean (default 1)")
    p.add_argument("--swap-rb", action="store_true", help="give --image inputs to the net in RGB order, not BGR")
    p.add_argument("--resize", type=_resize, metavar="H,W",
                   help="the size --image inputs are resized to (default: the input's own); the net runs at that size "
                   "where its layers allow it, as Caffe reshapes a net")
    p.add_argument("--random", type=int, metavar="SEED",
                   help="fill every input not given otherwise with seeded uniform values in [-1, 1] (a smoke run)")
    p.add_argument("--all-layers", action="store_true", help="also save every layer's tops as '<layer>/<top>'")
    p.add_argument("--matlab", action="store_true",
                   help="run a MATLAB-trained model as 'convert --matlab' rewrites it: inputs are row-major images "
                   "(N, C, H, W of the image as it is), spatial outputs come out row-major too")
    p.add_argument("--force", action="store_true", help="overwrite the output if it exists")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing unless there is an error")

    p = sub.add_parser(
        "verify",
        help="run a converted .onnx model, a PyTorch or a Keras model beside the reference forward and compare "
        "every tensor",
        description="Run CONVERTED.onnx (written by 'caffeport convert -f onnx') with onnxruntime, or a PyTorch "
        "(--torch) or Keras (--keras) model, generated or written by hand, and the Caffe model with caffeport's "
        "reference forward on the same inputs, and compare the net's outputs (with --all-layers every tensor that "
        "pairs with a Caffe top, '<layer>/<top>' as 'run --all-layers' names them; a top the model does not expose "
        "is listed, not failed). Prints a table (max abs diff, relative error max|got - want| / max|want|, ok or "
        "FAIL) and the first layer that diverges, and exits 1 when any tensor fails. ONNX needs onnx and "
        "onnxruntime: pip install 'caffeport[onnx]'.",
        epilog="examples: caffeport verify det1.caffemodel -p det1.prototxt det1.onnx --random 0 --all-layers; "
        "caffeport verify det1.caffemodel -p det1.prototxt --torch mymodel/ --all-layers; "
        "caffeport verify det1.caffemodel -p det1.prototxt --keras mymodels:build_det1 --all-layers",
    )
    p.add_argument("model", help="the .caffemodel (binary or HDF5 snapshot)")
    p.add_argument("-p", "--prototxt", help="deploy prototxt (decides the layers and the input shapes)")
    p.add_argument("converted", metavar="CONVERTED.onnx", nargs="?",
                   help="the ONNX model to check (or give --torch or --keras instead)")
    p.add_argument("--torch", metavar="PATH_OR_MODULE:CALLABLE",
                   help="check a PyTorch module instead: a '-f torch-code' folder (its model.py's load_model()), "
                   "FILE.py:callable or package.module:callable returning the nn.Module with its weights loaded; "
                   "called with float32 NCHW tensors in Caffe's input order, returning a dict keyed by output top "
                   "or tensors in the net's output order. --all-layers pairs submodules named like Caffe layers "
                   "(forward hooks), or the tops a generated model records (return_all=True)")
    p.add_argument("--keras", metavar="MODULE:CALLABLE",
                   help="check a Keras model instead (module:callable returning it, or a .keras file): NHWC unless "
                   "its input is shaped (C, H, W); --all-layers pairs layers named like Caffe layers")
    p.add_argument("--flax", metavar="PATH_OR_MODULE:CALLABLE",
                   help="check a Flax model instead: a '-f flax-code' folder (its model.py's load_model()), "
                   "FILE.py:callable or package.module:callable returning (module, variables) or a callable; "
                   "called with float32 NHWC arrays in Caffe's input order. --all-layers pairs the tops a generated "
                   "model records (return_all=True)")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="an input array in Caffe's layout (N, C, H, W), by net input name (repeat per input)")
    p.add_argument("--matlab", action="store_true",
                   help="the model was converted with --matlab: compare it with the rewritten net ('run --matlab'), "
                   "on row-major inputs")
    p.add_argument("--image", action="append", default=[], metavar="[NAME=]FILE",
                   help="an image for an input, prepared as 'caffeport run --image' does (needs Pillow)")
    p.add_argument("--mean", metavar="B,G,R|MEAN.binaryproto", help="subtracted from --image inputs")
    p.add_argument("--scale", type=float, default=1.0, help="multiplies --image inputs after the mean (default 1)")
    p.add_argument("--swap-rb", action="store_true", help="give --image inputs to the net in RGB order, not BGR")
    p.add_argument("--resize", type=_resize, metavar="H,W", help="the size --image inputs are resized to")
    p.add_argument("--random", type=int, metavar="SEED",
                   help="fill every input not given otherwise with seeded uniform values in [-1, 1] "
                   "(the default, with seed 0, when no input is given)")
    p.add_argument("--all-layers", action="store_true",
                   help="compare every intermediate tensor that pairs with a Caffe top, not only the outputs")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="largest accepted max|got - want| / max|want| per tensor (default 1e-4)")

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


def _robust_output() -> None:
    """Print what cannot be encoded as backslash escapes, never a UnicodeEncodeError.

    Layer names and paths come from the files: under ``PYTHONIOENCODING=ascii``
    (or a C locale) a Cyrillic layer name would otherwise end the program with
    a traceback instead of its table or its one-line error.
    """
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: exit 0, 1 for bad input (one line), 2 for a usage error, 130 when interrupted.

    130 (`INTERRUPTED`) is returned, not exited with: the ``caffeport`` entry
    point (`caffeport.__main__`) then ends the process by SIGINT, as a shell expects.

    Everything after the imports runs inside the ``try``, building the parser
    (which loads the exporters) included, so Ctrl-C is one line at any point;
    an interrupt during the imports themselves is caught by the entry point in
    `caffeport.__main__`. No arguments at all print the help.
    """
    try:
        _robust_output()
        exit_on_termination_signals()  # SIGTERM/SIGHUP unwind like Ctrl-C, so partial outputs are removed
        args_list = sys.argv[1:] if argv is None else list(argv)
        parser = build_parser()
        if not args_list:
            parser.print_help()
            return 0
        args, extra = parser.parse_known_args(args_list)
        if getattr(args, "command", None) == "verify" and args.converted is None and len(extra) == 1 \
                and not extra[0].startswith("-"):
            # argparse fills the optional CONVERTED.onnx together with MODEL, before any option; after
            # ``-p deploy.prototxt`` it is left over
            args.converted, extra = extra[0], []
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        with guarded_stdout():  # caffeport inspect M > /dev/full: one line, exit 1
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("caffeport: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        return 0
    except Exception as exc:
        # a Ctrl-C that a library reported as an error, or that Python wrapped (RuntimeError from __set_name__)
        if isinstance(interruption(exc), KeyboardInterrupt):
            print("caffeport: interrupted", file=sys.stderr)
            return INTERRUPTED
        if not isinstance(exc, CaffeportError):
            raise
        print(f"caffeport: error: {for_cli(exc)}", file=sys.stderr)  # options as flags: --force, not force=True
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
