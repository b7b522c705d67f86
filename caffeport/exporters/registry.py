"""The exporter registry: one named output format per module.

An exporter writes a transformed `Net` to a path it is given (a temporary
file that `caffeport.convert` renames into place on success), so no
exporter has to deal with partial output itself. Third-party formats register
through the same decorator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caffeport.errors import CaffeportError, ModelStructureError, option_error
from caffeport.ir import Layer, Net
from caffeport.readers.files import model_file, naming_file
from caffeport.transforms.registry import check_passes


@dataclass(frozen=True)
class ExportOptions:
    """Format-independent choices passed to every exporter."""

    #: also write layers without weights (the seed converter's -n)
    include_weightless: bool = False
    #: for formats written against a concrete Keras model (keras3): ``module:function`` or a ``.keras`` file
    keras_model: str | None = None
    #: load the layers that fit when some shapes do not, instead of refusing
    allow_partial: bool = False
    #: write the whole model (``.keras``), not only its weights
    save_model: bool = False
    #: -f onnx: the ONNX opset (``None``: the format's default)
    opset: int | None = None
    #: -f onnx: a symbolic batch axis on the graph's inputs and outputs
    dynamic_batch: bool = False
    #: -f onnx: stop before SSD's DetectionOutput; its bottoms (loc, conf, priors) are the graph's outputs
    ssd_heads: bool = False
    #: called as progress(bytes done, bytes total, blobs done, blobs total) by every exporter that streams
    progress: Callable[[int, int, int, int], None] | None = None
    #: -f onnx: weights in a ``.onnx.data`` file beside the model (``None``: only when one file would pass 2 GiB)
    external_data: bool | None = None
    #: -f onnx: the image inputs' mean, scale and channel swap, recorded or baked (`caffeport.onnx.preprocessing`)
    preprocessing: Any = None
    #: where the written path is renamed to (files beside it are named after it) and whether it may be replaced
    output: Path | None = None
    force: bool = False
    #: files an exporter published beside ``output`` (an ONNX data file): removed if ``output`` is not published
    companions: list[Path] = field(default_factory=list)


Writer = Callable[[Net, Path, ExportOptions], None]
#: a format's own check of the output name and options, run by `caffeport.convert` before the model is read
OutputCheck = Callable[[Path, ExportOptions], None]

#: the `ExportOptions` fields only some formats read: each exporter lists those it reads (`Exporter.options`), and
#: `check_export_options` refuses one given to a format that would ignore it
FORMAT_OPTIONS = ("keras_model", "allow_partial", "save_model", "opset", "dynamic_batch", "ssd_heads",
                  "external_data", "preprocessing")


@dataclass(frozen=True)
class EpsTarget:
    """Where a format's users meet Caffe's BatchNorm eps (`caffeport.conversion.eps_hint` says what to do)."""

    #: the framework that loads the file, its BatchNorm layer, that layer's default eps
    framework: str = ""
    build: str = ""
    default: float = 0.0
    #: where the file keeps Caffe's values per layer
    where: str = ""
    #: a code format: the generated file that builds each BatchNorm with Caffe's own eps (nothing to set)
    code_file: str | None = None


@dataclass(frozen=True)
class Exporter:
    name: str
    write: Writer
    #: the usual file name ending, e.g. ".h5"
    suffix: str
    #: the backend used when the user names none
    default_backend: str
    description: str
    #: the backends whose layout this format writes correctly (``None``: any, the format stores what it is given);
    #: `caffeport.convert` refuses the others, naming these
    backends: tuple[str, ...] | None = None
    #: other file name endings of this format (keras3's ``.keras`` with save_model)
    other_suffixes: tuple[str, ...] = ()
    #: the format writes a directory of files, not one file (``write`` is given an empty temporary directory,
    #: which `caffeport.convert` renames into place on success)
    directory: bool = False
    #: the `FORMAT_OPTIONS` this format reads
    options: tuple[str, ...] = ()
    #: its own check of the final output name and the options, before anything is read
    check: OutputCheck | None = None
    #: what its users must do with Caffe's BatchNorm eps (None: the eps values are stored with the weights)
    eps: EpsTarget | None = None
    #: backend names whose passes this format defines itself (a code generator lays the weights out itself, so
    #: keras-code's ``channels_first`` keeps Caffe's layouts and records only the data format); the others mean
    #: their `caffeport.transforms.BACKENDS` entry
    passes: dict[str, tuple[str, ...]] = field(default_factory=dict)


EXPORTERS: dict[str, Exporter] = {}

#: the backends that give Keras layouts and names
KERAS_BACKENDS = ("tensorflow", "cntk", "channels_first", "theano")
#: the backends that keep Caffe's own blobs
RAW_BACKENDS = ("caffe", "pycaffe")


def register_exporter(
    name: str, *, suffix: str, default_backend: str, description: str, backends: tuple[str, ...] | None = None,
    other_suffixes: tuple[str, ...] = (), directory: bool = False, options: tuple[str, ...] = (),
    check: OutputCheck | None = None, eps: EpsTarget | None = None, passes: dict[str, tuple[str, ...]] | None = None,
) -> Callable[[Writer], Writer]:
    unknown = sorted(set(options) - set(FORMAT_OPTIONS))
    if unknown:
        raise ValueError(f"exporter {name!r}: {', '.join(unknown)} are not among the format options {FORMAT_OPTIONS}")
    for backend, names in (passes or {}).items():
        check_passes(f"{name}'s {backend}", names)

    def register(write: Writer) -> Writer:
        if name in EXPORTERS:
            raise ValueError(f"an exporter named {name!r} is already registered")
        EXPORTERS[name] = Exporter(name, _naming_model(write), suffix, default_backend, description, backends,
                                   other_suffixes, directory, tuple(options), check, eps, dict(passes or {}))
        return write

    return register


def _naming_model(write: Writer) -> Writer:
    """``write``, its errors naming the model file: an exporter knows the layer it refuses, not where it came from.

    (Not the output: the exporter is given a temporary name beside it, which the user never sees.)
    """

    def named(net: Net, path: Path, options: ExportOptions) -> None:
        with naming_file(model_file(net)):
            write(net, path, options)

    return named


def formats_with(option: str) -> list[str]:
    """The registered formats that read ``option`` (one of `FORMAT_OPTIONS`), by name."""
    return sorted(exporter.name for exporter in EXPORTERS.values() if option in exporter.options)


def check_export_options(exporter: Exporter, options: ExportOptions) -> None:
    """Refuse a format option given to a format that does not read it (it would be ignored without a word)."""
    defaults = ExportOptions()
    for option in FORMAT_OPTIONS:
        value = getattr(options, option)
        if value not in (None, False, getattr(defaults, option)) and option not in exporter.options:
            given = ("{" + option + "}" if isinstance(value, bool) else "{" + option + "=}{value}")
            owners = " and ".join("{format=" + name + "}" for name in formats_with(option)) or "no format"
            raise option_error(CaffeportError, f"{given} is for {owners}, not {{format={exporter.name}}}",
                               fill={"value": "..." if option == "preprocessing" else repr(value)})


def format_for_name(name: str) -> str | None:
    """The registered format whose file ending ``name`` has (the longest that matches), or ``None``."""
    best: tuple[int, str] | None = None
    for exporter in EXPORTERS.values():
        for suffix in (exporter.suffix, *exporter.other_suffixes):
            if not suffix:  # a directory format has no file ending; "" would match every name
                continue
            if name.endswith(suffix) and (best is None or len(suffix) > best[0]):
                best = (len(suffix), exporter.name)
    return None if best is None else best[1]


def conversion_metadata(net: Net) -> dict[str, object]:
    """What a converted file records about its source and the conversion."""
    return {
        "source": {"caffemodel": net.caffemodel_path, "prototxt": net.prototxt_path, "format": net.source_format,
                   "name": net.name},
        "backend": net.conversion.backend,
        "data_format": net.conversion.data_format,
        "batchnorm_eps": net.conversion.batchnorm_eps,
        "name_map": net.conversion.name_map,
        "fused": net.conversion.fused,
        "framework_classes": {layer.name: layer.framework_class for layer in net.layers if layer.framework_class},
        **({"matlab": True} if net.conversion.matlab else {}),  # rewritten for row-major images (--matlab)
    }


#: layers a backend splits off a Caffe layer, by type: (what they hold, the suffix their name adds to the Caffe name)
_SPLIT_OFF = {"EmbedBias": ("the bias of Embed", "_bias"), "RNNOutput": ("the output projection of RNN", "_output")}
#: layer names in messages are cut to this many characters (a name can be megabytes long)
MESSAGE_NAME_CHARS = 80


def shown_name(name: str) -> str:
    """``name`` quoted for a message, cut to `MESSAGE_NAME_CHARS` with its length when longer."""
    if len(name) <= MESSAGE_NAME_CHARS:
        return repr(name)
    return f"{name[:MESSAGE_NAME_CHARS]!r}... ({len(name):,} characters)"


def describe_layer(layer: Layer) -> str:
    """A layer as a message names it: its name, and where it comes from when a backend split it off another.

    ``emb_bias`` may be a Caffe layer of that name or the bias the tensorflow
    backend splits off the Embed ``emb``; a refusal has to say which.
    """
    split = _SPLIT_OFF.get(layer.type)
    if split is not None and layer.name.endswith(split[1]):
        return f"{shown_name(layer.name)} ({split[0]} {shown_name(layer.name[: -len(split[1])])})"
    return f"{shown_name(layer.name)} ({layer.type})"


def refuse_same_name(first: Layer, second: Layer, written_as: str) -> ModelStructureError:
    """The error for two layers that one file would hold under one name, naming both."""
    split = first.type in _SPLIT_OFF or second.type in _SPLIT_OFF
    same = "Caffe allows two layers of one name, but " if first.name == second.name and not split else ""
    return ModelStructureError(
        f"layers {describe_layer(first)} and {describe_layer(second)} would both be written as {written_as}; "
        f"{same}a file keyed by name cannot hold both: rename one of them in the prototxt",
        layer=message_layer(second.name))


def message_layer(name: str) -> str | None:
    """``name`` for an error's ``layer`` field, or None when too long to print (the message then names it cut)."""
    return name if len(name) <= MESSAGE_NAME_CHARS else None


def file_safe_names(net: Net) -> dict[str, str]:
    """Each layer's name as it may appear in a file path or HDF5 group: no '/', '..', NUL or other surprises.

    Backends that sanitise names (all but ``caffe``) already give safe names,
    which come back unchanged. With raw Caffe names, a name like ``../../x``
    must not become a zip member or group path outside its place; two layers
    that end up with one name are refused, as the sanitising pass does.
    """
    from caffeport.transforms.names import safe_name

    names: dict[str, str] = {}
    owners: dict[str, str] = {}
    for layer in net.layers:
        safe = safe_name(layer.name)
        if owners.setdefault(safe, layer.name) != layer.name:
            raise ModelStructureError(
                f"layers {owners[safe]!r} and {layer.name!r} both become {safe!r} in the output; "
                "rename one of them in the prototxt", layer=layer.name)
        names[layer.name] = safe
    return names
