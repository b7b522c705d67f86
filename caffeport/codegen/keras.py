'''A standalone Keras 3 ``model.py`` generated from a Caffe net (``caffeport convert -f keras-code``).

The framework-neutral parts are shared with the torch-code generator
(`caffeport.codegen.common`: identifier names, stubs' params, line wrapping,
the sources' sha256; `caffeport.codegen.registry`: float literals): only the
per-layer code and the file's frame differ. The net comes after the torch backend (Caffe's
layouts, BatchNorm's scale factor divided out and a Scale folded in); this
module reorders the weights to Keras' channels_last layouts itself.

The file builds a functional ``keras.Model`` with NHWC inputs named after the
Caffe inputs, one Keras layer per Caffe layer named after it (plus the
padding/flatten layers Caffe's rules need, named ``<layer>_pad`` etc.), and
outputs a dict keyed by the net's output tops. Weights are in
``weights.h5`` (one group per weighted layer, datasets ``0, 1, ...`` in
``set_weights`` order, written with h5py) and loaded by ``load_model``.

A layer type without an emitter here becomes a ``NotGenerated`` layer that
raises NotImplementedError naming the layer, its type and its params.
'''

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffeport import __version__
from caffeport.codegen.common import Names as _Names
from caffeport.codegen.common import comment as _comment
from caffeport.codegen.common import emit, sha256
from caffeport.codegen.common import fed as _fed
from caffeport.codegen.common import quote as _q
from caffeport.codegen.common import stub_params as _stub_params
from caffeport.codegen.common import wrapped as _wrapped
from caffeport.codegen.registry import NotGenerated, number
from caffeport.errors import CaffeportError
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net
from caffeport.layers import layer_type
from caffeport.layers.eltwise import OPERATIONS
from caffeport.layers.fields import axis_index
from caffeport.layers.pooling import pool_method, rounds_down
from caffeport.layers.windows import conv_window, pool_window

WEIGHTS_FILE = "weights.h5"


@dataclass
class KerasCode:
    """One layer handed to an emitter and the lines it writes (``body``) and weights (``tensors``)."""

    layer: Layer
    caffe_name: str
    name: str
    bottoms: list[str]
    tops: list[str]
    names: _Names
    body: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    #: (Keras layer name, arrays in set_weights order)
    tensors: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)
    recorded: bool = True

    @property
    def x(self) -> str:
        return self.bottoms[0]

    @property
    def shape(self) -> tuple[int, ...]:
        shape = self.layer.bottom_shapes[0]
        assert shape is not None
        return tuple(shape)

    def params(self, key: str | None = None) -> dict[str, Any]:
        key = key or layer_type(self.layer.type).param
        return self.layer.param(key) if key else {}

    def assign(self, expression: str) -> None:
        self.body.append(f"{self.tops[0]} = {expression}")


KerasEmitter = Callable[[KerasCode], None]
KERAS_EMITTERS: dict[str, KerasEmitter] = {}


def _emits(*types: str) -> Callable[[KerasEmitter], KerasEmitter]:
    def register(function: KerasEmitter) -> KerasEmitter:
        for name in types:
            KERAS_EMITTERS[name] = function
        return function

    return register


def nhwc_axis(axis: int, ndim: int) -> int:
    """Caffe's NCHW axis in the channels_last tensor (4-D: C is last, H and W move up one; else unchanged)."""
    return {0: 0, 1: 3, 2: 1, 3: 2}[axis] if ndim == 4 else axis


def _f32(blob: object) -> np.ndarray:
    return np.asarray(blob, dtype=np.float32)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return (int(values[0]), int(values[-1]))


@_emits("Convolution")
def convolution(code: KerasCode) -> None:
    """ZeroPadding2D (Caffe pads symmetrically; Keras 'valid' pads nothing) then Conv2D.

    Caffe's kernel (out, in, h, w) is Keras' (h, w, in, out).
    """
    if len(code.shape) != 4 or len(code.bottoms) != 1:
        raise NotGenerated("only 2-D convolutions with one bottom are generated")
    window = conv_window(code.layer, 2)
    groups = layer_type(code.layer.type).group(code.layer, code.shape[1])  # type: ignore[attr-defined]
    p = code.params("convolution_param")
    bias = bool(p.get("bias_term", True))
    weight = np.asarray(code.layer.blobs[0])
    weight = _f32(weight.reshape(weight.shape[0], -1, *window.kernel)).transpose(2, 3, 1, 0)
    x = code.x
    if any(window.pad):
        pad = code.names(f"{code.caffe_name}_pad")
        code.body.append(f"{pad} = layers.ZeroPadding2D({_pair(window.pad)}, name={_q(pad)})({x})")
        x = pad
    options = f", strides={_pair(window.stride)}" if any(s != 1 for s in window.stride) else ""
    options += f", dilation_rate={_pair(window.dilation)}" if any(d != 1 for d in window.dilation) else ""
    options += f", groups={groups}" if groups != 1 else ""
    options += "" if bias else ", use_bias=False"
    code.assign(f"layers.Conv2D({weight.shape[3]}, {_pair(window.kernel)}{options}, name={_q(code.name)})({x})")
    code.tensors.append((code.name, [weight, _f32(code.layer.blobs[1])] if bias else [weight]))


def _caffe_pooled(size: int, kernel: int, stride: int, pad: int, ceil: bool) -> int:
    """Caffe's pooled size: ceil (or floor) of (size + 2 pad - kernel) / stride + 1, the last window starting inside."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@_emits("Pooling")
def pooling(code: KerasCode) -> None:
    """Global pooling as Keras' global layers; otherwise the `CaffePool2D` helper (Caffe's rounding and divisor)."""
    p = code.params()
    method = pool_method(p.get("pool"))
    if method not in ("MAX", "AVE") or len(code.tops) > 1 or len(code.shape) != 4:
        raise NotGenerated(f"pool {method} with {len(code.tops)} top(s) over a {len(code.shape)}-D input")
    if p.get("global_pooling", False):
        kind = "GlobalMaxPooling2D" if method == "MAX" else "GlobalAveragePooling2D"
        code.assign(f"layers.{kind}(keepdims=True, name={_q(code.name)})({code.x})")
        return
    window = pool_window(code.layer)
    ceil = not rounds_down(code.layer)
    code.helpers.add("CaffePool2D")
    code.assign(f'CaffePool2D("{method}", {_pair(window.kernel)}, {_pair(window.stride)}, {_pair(window.pad)}, '
                f"ceil={ceil}, name={_q(code.name)})({code.x})")


@_emits("InnerProduct")
def inner_product(code: KerasCode) -> None:
    """Dense on Caffe's C,H,W flattening: a 4-D input is permuted back to channels_first before Flatten."""
    p = code.params()
    axis = axis_index(code.layer, p.get("axis", 1), len(code.shape))
    bias = bool(p.get("bias_term", True))
    weight = _f32(code.layer.blobs[0]).reshape(int(p["num_output"]), -1).T
    if axis == 3 and len(code.shape) == 4:  # over Caffe's W alone: W moved last (N, H, C, W), Dense, moved back
        wlast = code.names(f"{code.caffe_name}_w_last")
        dense = code.names(f"{code.caffe_name}_dense")
        code.body.append(f"{wlast} = layers.Permute((1, 3, 2), name={_q(wlast)})({code.x})")
        code.body.append(f"{dense} = layers.Dense({weight.shape[1]}{'' if bias else ', use_bias=False'}, "
                         f"name={_q(code.name)})({wlast})")
        code.assign(f"layers.Permute((1, 3, 2), name={_q(code.names(code.caffe_name + '_nhwc'))})({dense})")
        code.tensors.append((code.name, [weight, _f32(code.layer.blobs[1])] if bias else [weight]))
        return
    if axis != 1:
        raise NotGenerated(f"inner_product_param.axis {axis} of a {len(code.shape)}-D input")
    x = code.x
    if len(code.shape) == 4:
        chw = code.names(f"{code.caffe_name}_chw")
        code.body.append(f"{chw} = layers.Flatten(name={_q(chw)})(layers.Permute((3, 1, 2), "
                         f"name={_q(chw + '_permute')})({x}))")
        x = chw
    elif len(code.shape) != 2:
        raise NotGenerated(f"a {len(code.shape)}-D input")
    code.assign(f"layers.Dense({weight.shape[1]}{'' if bias else ', use_bias=False'}, name={_q(code.name)})({x})")
    code.tensors.append((code.name, [weight, _f32(code.layer.blobs[1])] if bias else [weight]))


@_emits("Flatten")
def flatten(code: KerasCode) -> None:
    """Caffe's Flatten of axes 1.. in C,H,W order: a 4-D input is permuted back to channels_first first."""
    p = code.params()
    ndim = len(code.shape)
    if axis_index(code.layer, p.get("axis", 1), ndim) != 1 or axis_index(code.layer, p.get("end_axis", -1), ndim) \
            != ndim - 1:
        raise NotGenerated("a Flatten of other axes than 1..end")
    x = code.x
    if ndim == 4:
        x = f"layers.Permute((3, 1, 2), name={_q(code.names(code.caffe_name + '_chw'))})({x})"
    code.assign(f"layers.Flatten(name={_q(code.name)})({x})")


@_emits("Deconvolution")
def deconvolution(code: KerasCode) -> None:
    """Conv2DTranspose ('valid': (in - 1) stride + kernel) then Cropping2D of Caffe's pad on each side.

    Caffe's weight (in, out, h, w) is Keras' (h, w, out, in); grouped and dilated forms are not generated.
    """
    if len(code.shape) != 4 or len(code.bottoms) != 1:
        raise NotGenerated("only 2-D deconvolutions with one bottom are generated")
    window = conv_window(code.layer, 2)
    groups = layer_type(code.layer.type).group(code.layer, code.shape[1])  # type: ignore[attr-defined]
    if groups != 1 or any(d != 1 for d in window.dilation):
        raise NotGenerated(f"group {groups}, dilation {window.dilation} deconvolution")
    p = code.params("convolution_param")
    bias = bool(p.get("bias_term", True))
    weight = np.asarray(code.layer.blobs[0])
    weight = _f32(weight.reshape(weight.shape[0], -1, *window.kernel)).transpose(2, 3, 1, 0)
    options = f", strides={_pair(window.stride)}" if any(s != 1 for s in window.stride) else ""
    options += "" if bias else ", use_bias=False"
    x = f"layers.Conv2DTranspose({weight.shape[2]}, {_pair(window.kernel)}{options}, name={_q(code.name)})({code.x})"
    if any(window.pad):
        x = f"layers.Cropping2D({_pair(window.pad)}, name={_q(code.names(code.caffe_name + '_crop'))})({x})"
    code.assign(x)
    code.tensors.append((code.name, [weight, _f32(code.layer.blobs[1])] if bias else [weight]))


@_emits("ReLU")
def relu(code: KerasCode) -> None:
    slope = float(np.float32(code.params().get("negative_slope", 0.0) or 0.0))
    option = f"negative_slope={number(slope)}, " if slope else ""
    code.assign(f"layers.ReLU({option}name={_q(code.name)})({code.x})")


@_emits("Sigmoid", "TanH")
def activation(code: KerasCode) -> None:
    kind = "sigmoid" if code.layer.type == "Sigmoid" else "tanh"
    code.assign(f'layers.Activation("{kind}", name={_q(code.name)})({code.x})')


@_emits("PReLU")
def prelu(code: KerasCode) -> None:
    """Per-channel slopes: alpha shared over H and W (shape (1, 1, C)); ``channel_shared`` over every axis."""
    shared = bool(code.params().get("channel_shared", False))
    ndim = len(code.shape)
    slopes = _f32(code.layer.blobs[0]).reshape(-1)
    axes = list(range(1, ndim)) if shared else list(range(1, ndim - 1))
    alpha_shape = [1 if i + 1 in axes else code.shape[1] for i in range(ndim - 1)]
    alpha = np.broadcast_to(slopes, alpha_shape).astype(np.float32) if not shared else slopes.reshape(alpha_shape)
    option = f"shared_axes={axes}, " if axes else ""
    code.assign(f"layers.PReLU({option}name={_q(code.name)})({code.x})")
    code.tensors.append((code.name, [np.ascontiguousarray(alpha)]))


@_emits("Softmax")
def softmax(code: KerasCode) -> None:
    axis = nhwc_axis(axis_index(code.layer, code.params().get("axis", 1), len(code.shape)), len(code.shape))
    code.assign(f"layers.Softmax(axis={axis - len(code.shape)}, name={_q(code.name)})({code.x})")


@_emits("BatchNorm")
def batch_norm(code: KerasCode) -> None:
    """BatchNormalization with Caffe's eps; the torch backend has divided out the scale factor and folded a Scale in."""
    p = code.params()
    if p.get("use_global_stats") is False or len(code.layer.blobs) != 4:
        raise NotGenerated("batch statistics or a BatchNorm without a folded Scale")
    axis = nhwc_axis(1, len(code.shape)) - len(code.shape)
    code.assign(f"layers.BatchNormalization(axis={axis}, epsilon={number(p.get('eps', 1e-5))}, "
                f"name={_q(code.name)})({code.x})")
    code.tensors.append((code.name, [_f32(b) for b in code.layer.blobs]))
    code.recorded = not code.layer.params.get("fused_scale")


@_emits("FusedScale", "Dropout")
def identity(code: KerasCode) -> None:
    """A Scale folded into the BatchNorm before it, or inference-time Dropout: the bottom itself."""
    code.assign(f"layers.Identity(name={_q(code.name)})({code.x})")


@_emits("Eltwise")
def eltwise(code: KerasCode) -> None:
    """Add / Multiply / Maximum; SUM with coefficients other than 1 is not generated."""
    p = code.params()
    operation = OPERATIONS[p.get("operation", 1)] if isinstance(p.get("operation", 1), int) else str(p["operation"])
    coeff = [float(c) for c in p.get("coeff", [])]
    if operation == "SUM" and any(c != 1 for c in coeff):
        raise NotGenerated(f"SUM with coeff {coeff}")
    kind = {"SUM": "Add", "PROD": "Multiply", "MAX": "Maximum"}[operation]
    code.assign(f"layers.{kind}(name={_q(code.name)})([{', '.join(code.bottoms)}])")


@_emits("Concat")
def concat(code: KerasCode) -> None:
    p = code.params()
    axis = axis_index(code.layer, p.get("axis", p.get("concat_dim", 1)), len(code.shape))
    code.assign(f"layers.Concatenate(axis={nhwc_axis(axis, len(code.shape))}, name={_q(code.name)})"
                f"([{', '.join(code.bottoms)}])")


@_emits("Slice")
def slice_layer(code: KerasCode) -> None:
    """`CaffeSlice`: the bottom cut along the (channels_last) axis at Caffe's slice points (equal parts if none)."""
    from caffeport.layers.slice import slice_axis

    p = code.params()
    axis = slice_axis(code.layer, len(code.shape))
    size, count = code.shape[axis], len(code.tops)
    points = [int(v) for v in p.get("slice_point", [])] or [size // count * i for i in range(1, count)]
    code.helpers.add("CaffeSlice")
    code.body.append(f"{', '.join(code.tops)}{',' if count == 1 else ''} = CaffeSlice("
                     f"{nhwc_axis(axis, len(code.shape))}, {points}, name={_q(code.name)})({code.x})")


HELPERS = {
    "CaffeSlice": '''class CaffeSlice(keras.layers.Layer):
    """Caffe's Slice: the input cut along ``axis`` at the ``points``, one output per part."""

    def __init__(self, axis, points, **kwargs):
        super().__init__(**kwargs)
        self.axis, self.points = axis, points

    def call(self, x):
        return keras.ops.split(x, self.points, axis=self.axis)''',
    "CaffePool2D": '''class CaffePool2D(keras.layers.Layer):
    """Caffe's pooling: output size ceil((size + 2 pad - kernel) / stride) + 1, the last window starting inside the
    padded input; MAX ignores padding; AVE divides each window by its size clipped to the padded input (not the
    input), as Caffe counts it."""

    def __init__(self, method, kernel, stride, pad, ceil=True, **kwargs):
        super().__init__(**kwargs)
        self.method, self.kernel, self.stride, self.pad, self.ceil = method, kernel, stride, pad, ceil

    def _sizes(self, size, axis):
        k, s, p = self.kernel[axis], self.stride[axis], self.pad[axis]
        span = size + 2 * p - k
        out = (-(-span // s) if self.ceil else span // s) + 1
        if p and (out - 1) * s >= size + p:
            out -= 1
        starts = np.arange(out) * s - p
        count = np.minimum(starts + k, size + p) - starts
        return out, (out - 1) * s + k - size - p, count

    def compute_output_shape(self, shape):
        return (shape[0], self._sizes(shape[1], 0)[0], self._sizes(shape[2], 1)[0], shape[3])

    def call(self, x):
        (_, extra_h, count_h), (_, extra_w, count_w) = self._sizes(x.shape[1], 0), self._sizes(x.shape[2], 1)
        pads = [[0, 0], [self.pad[0], max(extra_h, 0)], [self.pad[1], max(extra_w, 0)], [0, 0]]
        if self.method == "MAX":
            x = keras.ops.pad(x, pads, constant_values=-3.4e38)
            return keras.ops.max_pool(x, self.kernel, self.stride, padding="valid")
        x = keras.ops.pad(x, pads)
        mean = keras.ops.average_pool(x, self.kernel, self.stride, padding="valid")
        scale = (self.kernel[0] * self.kernel[1]) / np.outer(count_h, count_w).astype("float32")
        return mean * scale[None, :, :, None]''',
    "NotGenerated": '''class NotGenerated(keras.layers.Layer):
    """A Caffe layer caffeport wrote no Keras code for: calling it raises NotImplementedError."""

    def __init__(self, caffe_name, caffe_type, reason, params, **kwargs):
        super().__init__(**kwargs)
        self.message = f"{caffe_name!r} ({caffe_type}) is not generated: {reason}; params {params}"

    def call(self, *inputs):
        raise NotImplementedError(self.message)''',
}


@dataclass
class KerasModel:
    """What `generate` made: the source, the weights per Keras layer, what was stubbed."""

    source: str
    weights: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)
    name_map: dict[str, str] = field(default_factory=dict)
    stubs: list[str] = field(default_factory=list)
    #: caffe blobs of stubbed layers, kept under the stub's name
    stub_blobs: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)


def _emit(code: KerasCode) -> str | None:
    """Run the layer's Keras emitter; the reason it cannot be generated, or None."""
    return emit(code, KERAS_EMITTERS.get(code.layer.type), "Keras")


def generate(net: Net) -> KerasModel:
    """The ``model.py`` of ``net`` (transformed with the torch backend) and the weights it loads."""
    if not net.inputs or any(not shape for shape in net.inputs.values()):
        raise CaffeportError("keras-code needs the net's input shapes: give the deploy prototxt")
    caffe_names = {new: old for old, new in net.metadata.get("name_map", {}).items()}
    names, variables = _Names(), _Names()  # Keras layer names; the variables holding the tops
    for taken in ("keras", "layers", "np", "h5py", "Path", "tops", "outputs", "build_model", "load_model", "WEIGHTS",
                  "stub", "NAME_MAP", "return_all", *HELPERS):
        variables(taken)
    current = {name: variables(name) for name in net.inputs}
    rewrites = dict.fromkeys(net.inputs, 1)
    body: list[str] = []
    helpers: set[str] = set()
    model = KerasModel(source="", inputs=dict(net.inputs))
    for name, shape in net.inputs.items():
        nhwc = (*shape[2:], shape[1]) if len(shape) == 4 else tuple(shape[1:])
        body.append(f"{current[name]} = keras.Input(shape={tuple(nhwc)}, name={_q(name)})")
    for layer in net.layers:
        caffe_name = caffe_names.get(layer.name, layer.name)
        if _fed(net, layer):
            body.extend(f"tops[{_q(f'{caffe_name}/{top}')}] = {current[top]}" for top in layer.tops)
            continue
        missing = [b for b in layer.bottoms if b not in current]
        if missing:
            raise CaffeportError(f"layer {caffe_name!r}: bottom {', '.join(map(repr, missing))} is produced by no "
                                 "earlier layer and is not a net input")
        for top in layer.tops:  # an in-place top gets a new variable, <top>_2, ... (a key no Caffe name can be)
            rewrites[top] = rewrites.get(top, 0) + 1
        tops = [variables(t) if rewrites[t] == 1 else variables(f"{t}\n{rewrites[t]}") for t in layer.tops]
        code = KerasCode(layer=layer, caffe_name=caffe_name, name=names(caffe_name),
                         bottoms=[current[b] for b in layer.bottoms], tops=tops, names=names)
        reason = _emit(code)
        if reason is not None:
            model.stubs.append(f"{caffe_name!r} ({layer.type}): {reason}")
            code = KerasCode(layer=layer, caffe_name=caffe_name, name=code.name, bottoms=code.bottoms,
                             tops=code.tops, names=names, helpers={"NotGenerated"})
            params = repr(_stub_params(layer))
            code.body.append(f"stub = NotGenerated({_q(caffe_name)}, {_q(layer.type)}, {_q(reason)}, {params}, "
                             f"name={_q(code.name)})")
            code.body.append(f"{', '.join(code.tops)} = stub({', '.join(code.bottoms)})")
            if layer.blobs:
                model.stub_blobs.append((code.name, [np.asarray(b) for b in layer.blobs]))
        body.append("")
        body.append(_comment(f"{caffe_name} ({'Scale' if layer.type == 'FusedScale' else layer.type}): "
                             f"{layer.bottoms} -> {layer.tops}"))
        body.extend(code.body)
        if code.recorded:
            body.extend(f"tops[{_q(f'{caffe_name}/{top}')}] = {var}" for top, var in zip(layer.tops, code.tops))
        for top, var in zip(layer.tops, code.tops, strict=True):
            current[top] = var
        helpers |= code.helpers
        if code.name != caffe_name:
            model.name_map[caffe_name] = code.name
        model.weights.extend(code.tensors)
    model.outputs = net_outputs(net)
    model.sources = [(Path(p).name, sha256(p)) for p in (net.prototxt_path, net.caffemodel_path) if p]
    model.source = _file(net, model, body, current, sorted(helpers))
    return model


def _file(net: Net, model: KerasModel, body: list[str], current: dict[str, str], helpers: list[str]) -> str:
    sources = "\n".join(f"    {name}  sha256 {digest}" for name, digest in model.sources) or "    (none recorded)"
    stubs = "\n".join(f"    {line}" for line in model.stubs) or "    none"
    inputs = ", ".join(f"{name} {tuple(shape)} (NCHW in Caffe)" for name, shape in net.inputs.items())
    usage = textwrap.fill(
        f"``model = load_model()`` builds the keras.Model (channels_last: NHWC inputs {inputs}) and loads the weights "
        f"beside this file ({WEIGHTS_FILE}); it returns a dict keyed by the net's output tops "
        f"({', '.join(model.outputs)}). ``load_model(return_all=True)`` also outputs every top as "
        '``"<layer>/<top>"`` (NHWC), the keys of ``caffeport run --all-layers``.', 110, break_long_words=False)
    doc = f'''"""The Caffe net {net.name or '(unnamed)'!r} as a Keras 3 functional model.

Generated by caffeport {__version__} (``caffeport convert -f keras-code``).

Source files:
{sources}

{usage}

Layers without generated code (calling them raises NotImplementedError):
{stubs}

This file needs only keras, numpy and h5py.
"""'''
    returned = ", ".join(f"{_q(top)}: {current[top]}" for top in model.outputs if top in current)
    lines = [doc, "", "from __future__ import annotations", "", "from pathlib import Path", "", "import h5py",
             "import keras", "import numpy as np", "from keras import layers", "",
             f'WEIGHTS = Path(__file__).with_name("{WEIGHTS_FILE}")',
             "#: Caffe layer name -> Keras layer name, where they differ",
             *_wrapped(f"NAME_MAP: dict[str, str] = {model.name_map!r}"), ""]
    for name in helpers:
        lines += ["", HELPERS[name], ""]
    lines += ["", "def build_model(return_all: bool = False) -> keras.Model:",
              '    """The functional model, weights not loaded; ``return_all`` adds every top as an output."""',
              "    tops: dict[str, keras.KerasTensor] = {}"]
    for line in body:
        lines.extend(_wrapped("    " + line) if line else [""])
    name = _q(net.name or "caffe_model")
    lines += ["", f"    outputs = {{{returned}}}",
              f"    return keras.Model({_inputs_list(net, current)}, {{**outputs, **tops}} if return_all else "
              f"outputs, name={name})", "", "",
              '''def load_model(weights: str | Path = WEIGHTS, return_all: bool = False) -> keras.Model:
    """The model with every weight of ``weights`` set on the layer of its group's name."""
    model = build_model(return_all)
    with h5py.File(weights, "r") as h5:
        for name, group in h5.items():
            if name == "__stubs__":  # the blobs of layers without generated code
                continue
            model.get_layer(name).set_weights([np.asarray(group[str(i)]) for i in range(len(group))])
    return model''', ""]
    text = "\n".join(lines)
    if "layers." not in text.replace("keras.layers.", ""):  # every layer a helper or a stub
        text = text.replace("from keras import layers\n", "", 1)
    return text


def _inputs_list(net: Net, current: dict[str, str]) -> str:
    return "[" + ", ".join(current[name] for name in net.inputs) + "]"


def readme(model: KerasModel) -> str:
    """The folder's short README."""
    sources = "\n".join(f"- `{name}`: sha256 `{digest}`" for name, digest in model.sources)
    stubs = "\n".join(f"- {line}" for line in model.stubs) or "none"
    nhwc = [tuple((*s[2:], s[1])) if len(s) == 4 else tuple(s) for s in model.inputs.values()]
    return f"""# Keras model

Generated by caffeport {__version__} (`caffeport convert -f keras-code`) from:

{sources}

- `model.py`: the Keras 3 functional model, standalone (imports only keras, numpy and h5py);
- `{WEIGHTS_FILE}`: its weights, one group per layer (`load_model()` sets them).

```python
import numpy as np
from model import load_model

model = load_model()
outputs = model([{", ".join(f"np.zeros({s}, 'float32')" for s in nhwc)}])
```

Inputs are NHWC (channels_last); outputs a dict keyed by the net's output tops
({", ".join(f"`{o}`" for o in model.outputs)}).

Layers without generated code (calling them raises NotImplementedError):

{stubs}
"""


def write_weights(model: KerasModel, path: Path) -> None:
    """``weights.h5``: one group per Keras layer, datasets ``0, 1, ...`` in set_weights order (stubs' blobs too)."""
    import h5py

    with h5py.File(path, "w") as h5:
        for name, arrays in model.weights:
            group = h5.create_group(name)
            for i, array in enumerate(arrays):
                group.create_dataset(str(i), data=array)
        if model.stub_blobs:
            stubs = h5.create_group("__stubs__")
            for name, arrays in model.stub_blobs:
                for i, array in enumerate(arrays):
                    stubs.create_dataset(f"{name}/{i}", data=array)

