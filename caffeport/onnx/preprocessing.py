"""An ONNX export's image preprocessing: recorded in its metadata, or baked into the graph as its first nodes.

Caffe nets were trained on images that OpenCV loaded (BGR, 0..255, (N, C, H,
W)) and that ``transform_param`` then turned into the net input:
``y = (x - mean) * scale``, the mean per channel or a mean image. `caffeport
run --image` does the same (`caffeport.readers.preprocess.image_input`), and
``caffeport convert -f onnx`` takes the same flags with the same meaning:
``--mean B,G,R`` (values per channel in the order the net receives them) or
``--mean MEAN.binaryproto``, ``--scale S``, ``--swap-rb`` (the net receives
RGB, not BGR). A mean image of the input's size is subtracted pixel by pixel;
one of another size by its per-channel means, as ``run`` does (the input shape
of an export is fixed, so this is decided, and folded, at export).

Without ``bake`` the graph is unchanged (its input takes the preprocessed
tensor) and the metadata says how to make that tensor. With ``bake`` the graph
input, still named after the Caffe input (users feed it by that name), takes
the raw image: float32 (N, C, H, W) in the input's shape, values 0..255, in
BGR order as OpenCV loads an image (grey for a 1-channel input), already
resized to H x W. The graph starts with, per baked input ``x``:

- ``Gather(x, [2, 1, 0], axis=1)`` -> ``x_swap_rb``, with ``swap_rb`` (BGR -> RGB);
- ``Sub(_, mean)`` -> ``x_minus_mean``, the mean a constant (1, C, 1, 1) or (1, C, H, W);
- ``Mul(_, scale)`` as a float32 scalar, unless ``scale`` is 1;

the last of them writing ``x_preprocessed`` (an ``Identity`` when there is
nothing else to do), which the net's layers read instead of ``x``, and which
the ``caffeport.tensors`` map now gives for the input's own ``<layer>/<top>``
key, so ``caffeport verify --all-layers`` also compares it with the
reference's input. Each step is one float32 operation, as numpy's in
`caffeport.readers.preprocess.image_input`: the baked graph gives the reference's
input bit for bit.

Metadata: key ``caffeport.preprocessing``, written only when some
preprocessing is given, JSON ``{"version": 1, "inputs": {NAME: ENTRY}}``,
one ENTRY per net input it applies to (the net's only input, or those named;
a net with several inputs must name them), each with:

``baked``                true: the graph takes the raw image; false: the graph input takes ``preprocessed``
``layout``               ``"NCHW"``
``shape``                the net input's shape; the image is resized to its H x W first
``resize``               ``"bilinear"``: half-pixel centres, edges clamped, no antialiasing (OpenCV INTER_LINEAR)
``image_channel_order``  ``"BGR"`` (``"grey"`` for 1 channel): the raw image, as OpenCV loads it
``value_range``          ``[0, 255]``: the raw image's
``swap_rb``              the channels are reversed before the mean
``channel_order``        what the net receives: ``"RGB"`` with ``swap_rb``, else ``"BGR"`` (or ``"grey"``)
``mean``                 C floats, per channel in ``channel_order`` (a mean image of another size: its
                         per-channel means), or null (no mean, or the mean image itself)
``mean_file``            the ``.binaryproto`` path as given, or null
``mean_image``           true: ``mean_file``'s image (the input's C x H x W) is subtracted pixel by pixel
``scale``                the factor applied after the mean (1: none)
``graph_input``          the ONNX graph input's name (the Caffe input's)
``preprocessed_tensor``  the baked graph's preprocessed tensor (``<input>_preprocessed``), or null
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caffeport.errors import CaffeportError, InputError
from caffeport.ir import Net
from caffeport.onnx.graph import TENSOR_MAP_KEY
from caffeport.onnx.proto import Model, Tensor, make_node
from caffeport.readers.preprocess import parse_mean

#: the metadata_props key of the preprocessing record
PREPROCESSING_KEY = "caffeport.preprocessing"
#: the record's schema version
SCHEMA_VERSION = 1
#: what the baked graph names the preprocessed tensor of input ``x``: ``x_preprocessed``
PREPROCESSED_SUFFIX = "_preprocessed"



@dataclass(frozen=True)
class Preprocessing:
    """What ``--mean``, ``--scale``, ``--swap-rb``, ``--bake-preprocessing`` and ``--image-input`` ask for.

    ``mean`` is per channel (C,) (or one value for every channel) in the order
    the net receives, or a mean image (C, H, W) / (1, C, H, W) as a
    ``.binaryproto`` holds it (then ``mean_file`` names the file); ``scale``
    None is 1 (kept apart so that "nothing given" can be told from ``--scale
    1``); ``inputs`` names the net inputs it is for (empty: the only one).
    """

    mean: np.ndarray | None = None
    mean_file: str | None = None
    scale: float | None = None
    swap_rb: bool = False
    bake: bool = False
    inputs: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.mean is None and self.scale is None and not self.swap_rb:
            raise CaffeportError("no preprocessing given: --bake-preprocessing and --image-input need --mean, "
                                 "--scale or --swap-rb")
        if self.scale is not None and not np.isfinite(self.scale):
            raise CaffeportError(f"--scale must be a finite number, got {self.scale}")


def preprocessing_from_options(mean: str | None = None, scale: float | None = None, swap_rb: bool = False,
                               bake: bool = False, inputs: Sequence[str] = ()) -> Preprocessing | None:
    """The `Preprocessing` the convert flags give (None: no flag given); a mean file is read here.

    ``mean`` is ``run``'s syntax: ``"104,117,123"`` or a ``.binaryproto`` path
    (`caffeport.readers.preprocess.parse_mean`). ``bake`` or ``inputs`` without any
    preprocessing is an error, not a silent no-op.
    """
    if mean is None and scale is None and not swap_rb and not bake and not inputs:
        return None
    values: np.ndarray | None = None
    mean_file: str | None = None
    if mean is not None:
        parsed = parse_mean(mean)
        if isinstance(parsed, str):
            from caffeport.readers import read_blob

            values, mean_file = np.asarray(read_blob(parsed), dtype=np.float32), parsed
        else:
            values = parsed
    return Preprocessing(mean=values, mean_file=mean_file, scale=scale, swap_rb=swap_rb, bake=bake,
                         inputs=tuple(inputs))


@dataclass(frozen=True)
class _Plan:
    """One input's preprocessing as the export applies it: the folded mean and the metadata entry."""

    name: str
    shape: tuple[int, ...]
    #: (C, 1, 1) or (C, H, W) float32, as `caffeport.readers.preprocess.image_input` subtracts it; None: no mean
    mean: np.ndarray | None
    scale: float
    swap_rb: bool
    entry: dict[str, Any]


def _fold_mean(mean: np.ndarray, shape: tuple[int, ...], name: str, where: str | None) -> tuple[np.ndarray, bool]:
    """``mean`` as `caffeport.readers.preprocess.image_input` subtracts it from an input of ``shape``.

    True: a whole image. The same rules: one value or one per channel; a mean image of the
    input's (C, H, W) pixel by pixel; one of another H x W by its per-channel
    means (computed the same way, so the constant is the same float32 values).
    """
    channels, height, width = shape[1], shape[2], shape[3]
    m = np.asarray(mean, dtype=np.float32)
    if m.ndim == 4 and m.shape[0] == 1:
        m = m[0]
    if m.ndim == 1:
        if m.size not in (1, channels):
            raise CaffeportError(f"--mean has {m.size} values for input {name!r} of {channels} channels", path=where)
        return np.broadcast_to(m.reshape(-1, 1, 1), (channels, 1, 1)).astype(np.float32), False
    if m.shape == (channels, height, width):
        return m, True
    if m.ndim != 3 or m.shape[0] != channels:
        raise CaffeportError(f"the mean image is {list(m.shape)}, input {name!r} is {list(shape[1:])}", path=where)
    return m.mean(axis=(1, 2), keepdims=True), False


def plan(net: Net, spec: Preprocessing) -> list[_Plan]:
    """Per input ``spec`` applies to, what the export does; refuses what cannot be an image input.

    The inputs are ``spec.inputs``, or the net's only input (a net with
    several must name them, as ``run --image NAME=FILE`` does). Each must be
    shaped (N, 1 or 3, H, W), as `caffeport.readers.preprocess.image_input` requires.
    """
    where = net.prototxt_path or net.caffemodel_path
    names = list(dict.fromkeys(spec.inputs))
    if not names:
        if len(net.inputs) != 1:
            raise CaffeportError(f"the net has {len(net.inputs)} inputs ({', '.join(net.inputs)}): name the image "
                                 "input(s) the preprocessing is for, --image-input NAME", path=where)
        names = list(net.inputs)
    unknown = [n for n in names if n not in net.inputs]
    if unknown:
        raise CaffeportError(f"--image-input {', '.join(map(repr, unknown))}: the net has no such input "
                             f"(its inputs: {', '.join(net.inputs)})", path=where)
    plans = []
    for name in names:
        shape = tuple(int(d) for d in net.inputs[name])
        if len(shape) != 4 or shape[1] not in (1, 3):
            raise CaffeportError(f"input {name!r} is {list(shape)}: preprocessing is for an image input, shaped "
                                 "(N, 1 or 3, H, W)", path=where)
        if spec.swap_rb and shape[1] == 1:
            raise CaffeportError(f"--swap-rb: input {name!r} has 1 channel (grey), no R and B to swap", path=where)
        mean, mean_image = (None, False) if spec.mean is None else _fold_mean(spec.mean, shape, name,
                                                                              spec.mean_file or where)
        scale = 1.0 if spec.scale is None else float(spec.scale)
        grey = shape[1] == 1
        entry = {
            "baked": spec.bake,
            "layout": "NCHW",
            "shape": list(shape),
            "resize": "bilinear",
            "image_channel_order": "grey" if grey else "BGR",
            "value_range": [0, 255],
            "swap_rb": spec.swap_rb,
            "channel_order": "grey" if grey else "RGB" if spec.swap_rb else "BGR",
            "mean": None if mean is None or mean_image else [float(v) for v in mean.reshape(-1)],
            "mean_file": spec.mean_file,
            "mean_image": mean_image,
            "scale": scale,
            "graph_input": name,
            "preprocessed_tensor": None,
        }
        plans.append(_Plan(name, shape, mean, scale, spec.swap_rb, entry))
    return plans


def _fresh(taken: set[str], name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... when a tensor of the graph already has it (reserved in ``taken``)."""
    candidate, i = name, 0
    while candidate in taken:
        i += 1
        candidate = f"{name}_{i}"
    taken.add(candidate)
    return candidate


def apply_preprocessing(model: Model, net: Net, spec: Preprocessing) -> None:
    """Record ``spec`` in ``model``'s metadata and, with ``spec.bake``, prepend its nodes (module docstring).

    Called by `caffeport.onnx.export.build` on the model (`caffeport.onnx.proto.Model`) it built for
    ``net``, before onnx's checker runs on it.
    """
    plans = plan(net, spec)
    graph = model.graph
    props = model.props()
    if spec.bake:
        taken = {i.name for i in graph.input} | {i.name for i in graph.initializer} \
            | {o for node in graph.node for o in node.output} | {v.name for v in graph.value_info}
        node_names = {node.name for node in graph.node}
        inputs = {info.name: info for info in graph.input}
        nodes, renamed = [], {}
        for p in plans:
            current = p.name
            steps: list[tuple[str, str, list[str]]] = []  # (op, output suffix, extra inputs)
            if p.swap_rb:
                flip = _fresh(taken, f"{p.name}_channel_flip")
                graph.initializer.append(Tensor.from_array(np.array([2, 1, 0], np.int64), flip))
                steps.append(("Gather", "_swap_rb", [flip]))
            if p.mean is not None:
                mean = _fresh(taken, f"{p.name}_mean")
                graph.initializer.append(Tensor.from_array(p.mean[None].astype(np.float32), mean))
                steps.append(("Sub", "_minus_mean", [mean]))
            if p.scale != 1.0:
                scale = _fresh(taken, f"{p.name}_scale")
                graph.initializer.append(Tensor.from_array(np.array(p.scale, np.float32), scale))
                steps.append(("Mul", "_scaled", [scale]))
            if not steps:  # --scale 1 alone: nothing to compute, but the tensor is still named
                steps.append(("Identity", "", []))
            final = _fresh(taken, p.name + PREPROCESSED_SUFFIX)
            for k, (op, suffix, extra) in enumerate(steps):
                out = final if k == len(steps) - 1 else _fresh(taken, p.name + suffix)
                attrs = {"axis": 1} if op == "Gather" else {}
                nodes.append(make_node(op, [current, *extra], [out],
                                       name=_fresh(node_names, f"preprocess/{p.name}/{op}"), **attrs))
                current = out
            renamed[p.name] = final
            graph.value_info.append(dataclasses.replace(inputs[p.name], name=final))
            p.entry["preprocessed_tensor"] = final
        for node in graph.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
        graph.node[:0] = nodes
        if TENSOR_MAP_KEY in props:
            pairs = json.loads(props[TENSOR_MAP_KEY])
            props[TENSOR_MAP_KEY] = json.dumps({key: renamed.get(value, value) for key, value in pairs.items()},
                                               sort_keys=True)
    props[PREPROCESSING_KEY] = json.dumps({"version": SCHEMA_VERSION, "inputs": {p.name: p.entry for p in plans}})
    model.set_props(props)


def read_preprocessing(model: Any, path: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``caffeport.preprocessing`` entries of an ONNX model by input name (empty: none recorded)."""
    for prop in model.metadata_props:
        if prop.key == PREPROCESSING_KEY:
            try:
                record = json.loads(prop.value)
                entries = record["inputs"]
                if not isinstance(entries, dict) or not all(isinstance(e, dict) for e in entries.values()):
                    raise TypeError("'inputs' is not a map of entries")
            except (ValueError, KeyError, TypeError) as exc:
                raise CaffeportError(f"the model's {PREPROCESSING_KEY} metadata is malformed ({exc})",
                                     path=path) from exc
            return entries
    return {}


def baked_inputs(model: Any) -> dict[str, dict[str, Any]]:
    """The graph inputs whose preprocessing is baked in (they take raw images), with their entries."""
    return {name: entry for name, entry in read_preprocessing(model).items() if entry.get("baked")}


def onnx_feeds(model: Any, inputs: Mapping[str, np.ndarray],
               raw_images: Mapping[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """What to feed ``model`` for the reference's ``inputs``: a baked input gets its raw image instead.

    ``raw_images`` are the images before mean and scale (BGR, 0..255, resized:
    `caffeport.readers.preprocess.image_input` without mean, scale or swap), by
    input name. A baked input given only as a preprocessed array (``--input``,
    ``--random``) is refused: the graph's preprocessing could only be checked
    against itself then.
    """
    feeds = dict(inputs)
    for name, entry in baked_inputs(model).items():
        if raw_images is None or name not in raw_images:
            raise InputError(f"the ONNX model's input {name!r} takes the raw image (its preprocessing is baked in: "
                             f"{describe(entry)}): give that input as an image (--image), prepared with the same "
                             "--mean, --scale and --swap-rb for the reference")
        feeds[name] = raw_images[name]
    return feeds


def describe(entry: Mapping[str, Any]) -> str:
    """One input's recorded preprocessing in a few words, for messages."""
    parts = []
    if entry.get("swap_rb"):
        parts.append("BGR -> RGB")
    if entry.get("mean_image"):
        parts.append(f"minus the mean image {entry.get('mean_file')}")
    elif entry.get("mean") is not None:
        parts.append("minus " + ",".join(f"{v:g}" for v in entry["mean"]))
    if entry.get("scale", 1.0) != 1.0:
        parts.append(f"times {entry['scale']:g}")
    return ", ".join(parts) or "none"
