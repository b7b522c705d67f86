'''A standalone Keras 3 ``model.py`` generated from a Caffe net (``caffeport convert -f keras-code``).

The framework-neutral parts are shared with the torch-code generator
(`caffeport.codegen.common`: identifier names, stubs' params, line wrapping,
the sources' sha256; `caffeport.codegen.registry`: float literals): only the
per-layer code and the file's frame differ. The net keeps Caffe's layouts (the
torch passes: BatchNorm's scale factor divided out and a Scale folded in);
this module reorders the weights to Keras' layouts itself.

The file builds a functional ``keras.Model`` with inputs named after the
Caffe inputs, one Keras layer per Caffe layer named after it (plus the
padding/permute/reshape layers Caffe's rules need, named ``<layer>_pad``,
``<layer>_nchw`` etc.: `KerasCode.sub` makes those names unique, after every
Caffe layer's own name is reserved, so a Caffe layer called ``conv1_pad``
keeps its name and the helper becomes ``conv1_pad_2``), and outputs a dict
keyed by the net's output tops. Weights are in ``weights.h5`` (one group per
weighted layer, datasets ``0, 1, ...`` in ``set_weights`` order, written with
h5py) and loaded by ``load_model``.

Layouts (`Layout`, from the net's ``conversion.data_format``): a 4-D top is
held channels_last (Caffe axis order 0, 2, 3, 1; the default) or channels_first
(Caffe's own NCHW, ``--backend channels_first``); a top of any other rank is
held in Caffe's own order. Caffe's axis fields (Concat, Softmax, Slice, Crop,
Normalize) are mapped to the held axes (`Layout.axis`); layers that reorder
memory (Reshape, Flatten, InnerProduct over a 4-D blob, Embed) put a 4-D input
back in NCHW, apply Caffe's C-order rule and hold the result again; a Permute
is Caffe's order composed with both held layouts, one Keras Permute. Keras'
image layers and this file's image helpers are always given ``data_format``
(without it a Keras layer follows the user's ``keras.json``). Convolution
kernels are (h, w, in, out) in both layouts, as Keras stores them. The batch
axis never moves (Keras keeps it first), so a Permute or Reshape moving it is
not generated. Shapes are the prototxt's:
Reshape, Crop and Interp sizes are literal, and PriorBox is a constant
computed at export by the reference's own forward.

A layer type without an emitter here, or a form an emitter refuses, becomes a
``NotGenerated`` layer that raises NotImplementedError naming the layer, its
type and its params.
'''

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffeport import __version__
from caffeport.codegen.common import Names as _Names
from caffeport.codegen.common import comment as _comment
from caffeport.codegen.common import emit, matlab_note, sha256
from caffeport.codegen.common import fed as _fed
from caffeport.codegen.common import quote as _q
from caffeport.codegen.common import stub_params as _stub_params
from caffeport.codegen.common import wrapped as _wrapped
from caffeport.codegen.registry import NotGenerated, number
from caffeport.codegen.ssd_numpy import SSD_DETECTIONS, ssd_arguments
from caffeport.errors import CaffeportError
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net
from caffeport.layers import layer_type
from caffeport.layers.concat import concat_axis
from caffeport.layers.crop import crop_offsets
from caffeport.layers.fields import axis_index, ints
from caffeport.layers.permute import full_order
from caffeport.layers.pooling import pool_method, rounds_down
from caffeport.layers.scale import broadcast_shape
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
    #: the variables holding the tops (locals an emitter needs come from here too, see `local`)
    variables: _Names = field(default_factory=_Names)
    body: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    #: (Keras layer name, arrays in set_weights order)
    tensors: list[tuple[str, list[np.ndarray]]] = field(default_factory=list)
    recorded: bool = True
    layout: Layout = field(default_factory=lambda: CHANNELS_LAST)

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

    def sub(self, suffix: str) -> str:
        """The Keras name of a helper layer of this one (``<layer>_<suffix>``), unique among all layer names.

        The key holds a line break, which no Caffe name has, so the helper and a Caffe layer that happens to be
        called ``<layer>_<suffix>`` get distinct names (the later one numbered), whichever comes first.
        """
        return self.names(f"{self.caffe_name}\n{suffix}")

    def local(self, suffix: str) -> str:
        """A fresh Python variable for an intermediate value of this layer, distinct from every top's variable."""
        return self.variables(f"{self.caffe_name}\n{suffix}")

    @property
    def top_shape(self) -> tuple[int, ...]:
        shape = self.layer.top_shapes[0]
        assert shape is not None
        return tuple(shape)


KerasEmitter = Callable[[KerasCode], None]
KERAS_EMITTERS: dict[str, KerasEmitter] = {}


def _emits(*types: str) -> Callable[[KerasEmitter], KerasEmitter]:
    def register(function: KerasEmitter) -> KerasEmitter:
        for name in types:
            KERAS_EMITTERS[name] = function
        return function

    return register


#: a 4-D top held channels_last: Keras axis j is Caffe axis TO_NHWC[j]
TO_NHWC = (0, 2, 3, 1)


@dataclass(frozen=True)
class Layout:
    """How the generated model holds a 4-D top: channels_last (NHWC, Keras' default, the only form Keras'
    TensorFlow backend convolves on a CPU) or channels_first (Caffe's own NCHW, `--backend channels_first`: for
    Keras' JAX and torch backends and GPUs). A top of any other rank is held in Caffe's order either way."""

    data_format: str = "channels_last"

    @property
    def channels_last(self) -> bool:
        return self.data_format == "channels_last"

    def held(self, ndim: int) -> tuple[int, ...]:
        """Keras axis j of a top of ``ndim`` Caffe axes is Caffe axis ``held(ndim)[j]``."""
        return TO_NHWC if ndim == 4 and self.channels_last else tuple(range(ndim))

    def axis(self, axis: int, ndim: int) -> int:
        """Caffe's axis ``axis`` of an ``ndim``-D top in the held tensor (channels_last: C last, H and W up one)."""
        return self.held(ndim).index(axis)

    def option(self) -> str:
        """The ``data_format`` keyword of Keras' image layers and this file's image helpers, always given: a
        layer without it follows the user's ``keras.json`` (``image_data_format``), which may say otherwise."""
        return f', data_format="{self.data_format}"'

    def shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """A Caffe shape as the model holds it."""
        return tuple(int(shape[a]) for a in self.held(len(shape)))


CHANNELS_LAST = Layout()


def _f32(blob: object) -> np.ndarray:
    return np.asarray(blob, dtype=np.float32)


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return (int(values[0]), int(values[-1]))


def _permute(code: KerasCode, x: str, order: tuple[int, ...], name: str) -> str:
    """``x`` transposed by ``order`` (Keras axes, batch first): a Permute layer called ``name``, or ``x`` itself
    for the identity. Keras' Permute keeps the batch axis where it is, so an order moving axis 0 is not generated."""
    if order[0] != 0:
        raise NotGenerated(f"a transpose {order} that moves the batch axis")
    if list(order) == sorted(order):
        return x
    return f"layers.Permute({tuple(order[1:])}, name={_q(name)})({x})"


def _caffe_order(code: KerasCode, x: str, ndim: int) -> str:
    """A held top in Caffe's own axis order (a channels_last 4-D one transposed back to NCHW)."""
    held = code.layout.held(ndim)
    return _permute(code, x, tuple(held.index(i) for i in range(ndim)), code.sub("nchw"))


def _held_order(code: KerasCode, x: str, ndim: int) -> str:
    """A tensor in Caffe's axis order made the held form of its rank (4-D channels_last: NHWC)."""
    return _permute(code, x, code.layout.held(ndim), code.sub("nhwc"))


def _reshaped(code: KerasCode, x: str, shape: tuple[int, ...], top: tuple[int, ...], name: str,
              hold: bool = True) -> str:
    """Caffe's C-order reshape of a held top of ``shape`` to ``top`` (a Reshape called ``name``): through Caffe's
    order, then held again unless ``hold`` is False (the result left in Caffe's order).

    The batch dim must stay (Keras' Reshape keeps it; the prototxt's shapes are fixed, so the others are literal).
    """
    if len(top) < 2 or top[0] != shape[0]:
        raise NotGenerated(f"a reshape of {shape} to {top} (the batch axis must stay, with other axes after it)")
    x = _caffe_order(code, x, len(shape))
    if tuple(top) != tuple(shape):
        x = f"layers.Reshape({tuple(top[1:])}, name={_q(name)})({x})"
    return _held_order(code, x, len(top)) if hold else x


def _named_identity(code: KerasCode) -> None:
    """A layer that computed nothing still gets a Keras layer of its Caffe name (an Identity)."""
    if code.body[-1] == f"{code.tops[0]} = {code.x}":
        code.body[-1] = f"{code.tops[0]} = layers.Identity(name={_q(code.name)})({code.x})"


@_emits("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise")
def convolution(code: KerasCode) -> None:
    """ZeroPadding2D (Caffe pads symmetrically; Keras 'valid' pads nothing) then Conv2D.

    Caffe's kernel (out, in, h, w) is Keras' (h, w, in, out).
    """
    if len(code.shape) != 4 or len(code.bottoms) != 1:
        raise NotGenerated("only 2-D convolutions with one bottom are generated")
    kind = layer_type(code.layer.type)
    if axis_index(code.layer, code.params("convolution_param").get("axis", 1), 4) != 1:
        raise NotGenerated("convolution over axes other than 2.. (convolution_param.axis != 1)")
    window = conv_window(code.layer, 2)
    groups = kind.group(code.layer, code.shape[1])  # type: ignore[attr-defined]
    p = code.params("convolution_param")
    bias = bool(p.get("bias_term", True))
    weight = np.asarray(code.layer.blobs[0])
    weight = _f32(weight.reshape(weight.shape[0], -1, *window.kernel)).transpose(2, 3, 1, 0)
    x, data_format = code.x, code.layout.option()
    if any(window.pad):
        x = f"layers.ZeroPadding2D({_pair(window.pad)}{data_format}, name={_q(code.sub('pad'))})({x})"
    strided, dilated = any(s != 1 for s in window.stride), any(d != 1 for d in window.dilation)
    options = f", strides={_pair(window.stride)}" if strided and not dilated else ""
    options += f", dilation_rate={_pair(window.dilation)}" if dilated else ""
    options += f", groups={groups}" if groups != 1 else ""
    options += "" if bias else ", use_bias=False"
    x = f"layers.Conv2D({weight.shape[3]}, {_pair(window.kernel)}{options}{data_format}, name={_q(code.name)})({x})"
    if strided and dilated:  # Keras refuses both: the stride-1 output sampled every stride rows/columns is Caffe's
        code.helpers.add("CaffeSubsample")
        x = f"CaffeSubsample({_pair(window.stride)}{data_format}, name={_q(code.sub('stride'))})({x})"
    code.assign(x)
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
        code.assign(f"layers.{kind}(keepdims=True{code.layout.option()}, name={_q(code.name)})({code.x})")
        return
    window = pool_window(code.layer)
    ceil = not rounds_down(code.layer)
    code.helpers.add("CaffePool2D")
    code.assign(f'CaffePool2D("{method}", {_pair(window.kernel)}, {_pair(window.stride)}, {_pair(window.pad)}, '
                f"ceil={ceil}{code.layout.option()}, name={_q(code.name)})({code.x})")


@_emits("InnerProduct")
def inner_product(code: KerasCode) -> None:
    """Dense over the axes from ``axis`` on, flattened in Caffe's C order (a 4-D input is put back in NCHW first).

    The output has ``axis + 1`` axes, the last ``num_output``; Dense acts on the last axis, so the input is
    reshaped to (N, ..., K) first, unless ``axis`` is already the last axis.
    """
    p = code.params()
    shape = code.shape
    axis = axis_index(code.layer, p.get("axis", 1), len(shape))
    if axis == 0:
        raise NotGenerated("an InnerProduct over the batch axis (inner_product_param.axis 0)")
    bias = bool(p.get("bias_term", True))
    weight = _f32(code.layer.blobs[0]).reshape(int(p["num_output"]), -1).T
    x = code.x
    if axis != len(shape) - 1 or len(shape) == 4:
        x = _reshaped(code, x, shape, (*shape[:axis], math.prod(shape[axis:])), code.sub("flat"), hold=False)
    x = f"layers.Dense({weight.shape[1]}{'' if bias else ', use_bias=False'}, name={_q(code.name)})({x})"
    x = _held_order(code, x, axis + 1)
    code.assign(x)
    code.tensors.append((code.name, [weight, _f32(code.layer.blobs[1])] if bias else [weight]))


@_emits("Flatten")
def flatten(code: KerasCode) -> None:
    """Caffe's Flatten of ``axis``..``end_axis`` in C order: a reshape (a 4-D input put back in NCHW first)."""
    code.assign(_reshaped(code, code.x, code.shape, code.top_shape, code.name))
    _named_identity(code)


@_emits("Reshape")
def reshape(code: KerasCode) -> None:
    """Caffe's Reshape (0 copies a dim, one -1 is inferred: the top shape inference made) as a C-order reshape."""
    code.assign(_reshaped(code, code.x, code.shape, code.top_shape, code.name))
    _named_identity(code)


@_emits("Permute")
def permute(code: KerasCode) -> None:
    """Caffe's Permute (``numpy.transpose(x, order)`` in NCHW terms) composed with the held layouts: one Permute.

    The held input's Keras axis j is Caffe axis ``held_in[j]``; the top's Caffe axis i is input axis ``order[i]``;
    the top is held as ``held_out``: so Keras output axis j reads Keras input axis ``held_in^-1[order[held_out[j]]]``.
    """
    ndim = len(code.shape)
    order = full_order(code.layer, ndim)
    held_in = code.layout.held(ndim)
    inverse = [held_in.index(i) for i in range(ndim)]
    total = tuple(inverse[order[j]] for j in code.layout.held(ndim))
    code.assign(_permute(code, code.x, total, code.name))
    _named_identity(code)


@_emits("Crop")
def crop(code: KerasCode) -> None:
    """`CaffeCrop`: the window at Caffe's offsets, the second bottom's size from ``axis`` on (only its shape read).

    The offsets and sizes are Caffe's per-axis ones, reordered to the held layout; the prototxt's shapes are fixed.
    """
    if len(code.bottoms) != 2:
        raise NotGenerated(f"Crop takes 2 bottoms, this one has {len(code.bottoms)}")
    reference = code.layer.bottom_shapes[1]
    assert reference is not None
    offsets = crop_offsets(code.layer, code.shape, reference)
    axis = axis_index(code.layer, code.params().get("axis", 2), len(code.shape))
    if axis == 0:
        raise NotGenerated("a Crop of the batch axis")
    held = code.layout.held(len(code.shape))
    starts = [offsets[a] if a >= axis else 0 for a in held]
    sizes = [int(reference[a]) if a >= axis else None for a in held]
    code.helpers.add("CaffeCrop")
    code.assign(f"CaffeCrop({starts[1:]}, {sizes[1:]}, name={_q(code.name)})({code.x})")


@_emits("Deconvolution")
def deconvolution(code: KerasCode) -> None:
    """Conv2DTranspose ('valid', output_padding 0: (in - 1) stride + kernel) then Cropping2D of Caffe's pad.

    Caffe's output is ``stride * (in - 1) + kernel - 2 * pad``. Caffe's weight (in, out / group, h, w) is Keras'
    (h, w, out / group, in / group) per group; a grouped one is split on channels (`CaffeSlice`), one
    Conv2DTranspose per group (``<layer>_g<i>``), and concatenated in group order, as Caffe's groups are laid out.
    Dilated deconvolutions are not generated.
    """
    if len(code.shape) != 4 or len(code.bottoms) != 1:
        raise NotGenerated("only 2-D deconvolutions with one bottom are generated")
    window = conv_window(code.layer, 2)
    kind = layer_type(code.layer.type)
    groups = kind.group(code.layer, code.shape[1])  # type: ignore[attr-defined]
    if any(d != 1 for d in window.dilation):
        raise NotGenerated(f"dilation {window.dilation} deconvolution")
    p = code.params("convolution_param")
    bias = bool(p.get("bias_term", True))
    blob = np.asarray(code.layer.blobs[0])
    weight = _f32(blob.reshape(blob.shape[0], -1, *window.kernel)).transpose(2, 3, 1, 0)  # (h, w, out/g, in)
    cin, cout = code.shape[1] // groups, weight.shape[2]
    options = f", strides={_pair(window.stride)}" if any(s != 1 for s in window.stride) else ""
    if any(k < s for k, s in zip(window.kernel, window.stride, strict=True)):
        options += ", output_padding=(0, 0)"  # else Keras makes in * stride rows when kernel < stride
    options += "" if bias else ", use_bias=False"
    options += code.layout.option()
    bias_blob = _f32(code.layer.blobs[1]).reshape(-1) if bias else None

    def tensors(g: int) -> list[np.ndarray]:
        w = np.ascontiguousarray(weight[:, :, :, g * cin : (g + 1) * cin])
        return [w, bias_blob[g * cout : (g + 1) * cout]] if bias_blob is not None else [w]

    if groups == 1:
        x = f"layers.Conv2DTranspose({cout}, {_pair(window.kernel)}{options}, name={_q(code.name)})({code.x})"
        code.tensors.append((code.name, tensors(0)))
    else:
        parts = code.local("groups")
        code.helpers.add("CaffeSlice")
        points = [cin * g for g in range(1, groups)]
        channels = code.layout.axis(1, 4)
        code.body.append(f"{parts} = CaffeSlice({channels}, {points}, name={_q(code.sub('split'))})({code.x})")
        outs = []
        for g in range(groups):
            name = code.sub(f"g{g}")
            outs.append(f"layers.Conv2DTranspose({cout}, {_pair(window.kernel)}{options}, name={_q(name)})"
                        f"({parts}[{g}])")
            code.tensors.append((name, tensors(g)))
        x = f"layers.Concatenate(axis={channels}, name={_q(code.name)})([{', '.join(outs)}])"
    if any(window.pad):
        x = f"layers.Cropping2D({_pair(window.pad)}{code.layout.option()}, name={_q(code.sub('crop'))})({x})"
    code.assign(x)


@_emits("ReLU")
def relu(code: KerasCode) -> None:
    slope = float(np.float32(code.params().get("negative_slope", 0.0) or 0.0))
    option = f"negative_slope={number(slope)}, " if slope else ""
    code.assign(f"layers.ReLU({option}name={_q(code.name)})({code.x})")


@_emits("Sigmoid", "TanH")
def activation(code: KerasCode) -> None:
    kind = "sigmoid" if code.layer.type == "Sigmoid" else "tanh"
    code.assign(f'layers.Activation("{kind}", name={_q(code.name)})({code.x})')


@_emits("Power")
def power(code: KerasCode) -> None:
    """`CaffePower`: ``(shift + scale * x) ** power``; when ``power * scale`` is 0 the constant 1 or
    ``shift ** power`` whatever the input (Caffe does not read it). Parameters are Caffe's float32 values."""
    p = code.params()
    pw, scale, shift = (np.float32(p.get(key, default)) for key, default in
                        (("power", 1.0), ("scale", 1.0), ("shift", 0.0)))
    code.helpers.add("CaffePower")
    constant = "None"
    if pw * scale == 0:
        constant = number(1.0 if pw == 0 else float(np.float32(np.power(np.float64(shift), np.float64(pw)))))
    code.assign(f"CaffePower({number(pw)}, {number(scale)}, {number(shift)}, constant={constant}, "
                f"name={_q(code.name)})({code.x})")


@_emits("PReLU")
def prelu(code: KerasCode) -> None:
    """Per-channel slopes: alpha shared over every axis after the batch but the channel one (Caffe's axis 1: 4-D
    NHWC, alpha (1, 1, C); NCHW (C, 1, 1)); ``channel_shared``: one slope shared over every axis."""
    shared = bool(code.params().get("channel_shared", False))
    ndim = len(code.shape)
    slopes = _f32(code.layer.blobs[0]).reshape(-1)
    channel = code.layout.axis(1, ndim)
    axes = [a for a in range(1, ndim) if shared or a != channel]
    alpha = slopes.reshape([1 if a in axes else code.shape[1] for a in range(1, ndim)])
    option = f"shared_axes={axes}, " if axes else ""
    code.assign(f"layers.PReLU({option}name={_q(code.name)})({code.x})")
    code.tensors.append((code.name, [np.ascontiguousarray(alpha)]))


@_emits("Softmax")
def softmax(code: KerasCode) -> None:
    axis = code.layout.axis(axis_index(code.layer, code.params().get("axis", 1), len(code.shape)), len(code.shape))
    code.assign(f"layers.Softmax(axis={axis - len(code.shape)}, name={_q(code.name)})({code.x})")


@_emits("BatchNorm")
def batch_norm(code: KerasCode) -> None:
    """BatchNormalization with Caffe's eps; the torch backend has divided out the scale factor and folded a Scale in."""
    p = code.params()
    if p.get("use_global_stats") is False or len(code.layer.blobs) != 4:
        raise NotGenerated("batch statistics or a BatchNorm without a folded Scale")
    axis = code.layout.axis(1, len(code.shape)) - len(code.shape)
    code.assign(f"layers.BatchNormalization(axis={axis}, epsilon={number(p.get('eps', 1e-5))}, "
                f"name={_q(code.name)})({code.x})")
    code.tensors.append((code.name, [_f32(b) for b in code.layer.blobs]))
    code.recorded = not code.layer.params.get("fused_scale")


@_emits("FusedScale", "Dropout")
def identity(code: KerasCode) -> None:
    """A Scale folded into the BatchNorm before it, or inference-time Dropout: the bottom itself."""
    code.assign(f"layers.Identity(name={_q(code.name)})({code.x})")


def _broadcast_held(layout: Layout, shape: tuple[int, ...], start: int, factor: tuple[int, ...]) -> tuple[int, ...]:
    """The shape that broadcasts a factor spanning Caffe axes ``start``.. over the held form of ``shape``."""
    return layout.shape((1,) * start + tuple(factor) + (1,) * (len(shape) - start - len(factor)))


@_emits("Scale", "Bias")
def scale(code: KerasCode) -> None:
    """Scale (``x * factor (+ bias)``) and Bias (``x + bias``), the operand spanning Caffe axes ``axis``.. .

    A learned operand (`CaffeScale`) is stored already shaped to broadcast over the held input:
    Caffe's (outer, dim, inner) view is that broadcast. A second bottom as the operand (`CaffeAlong`) is taken
    back to Caffe's order, reshaped to span its axes and held again; it must start at the batch axis (a Keras
    tensor always has one), so only ``axis: 0`` is generated for that form.
    """
    p = code.params()
    bias = code.layer.type == "Bias" or bool(p.get("bias_term", False))
    ndim = len(code.shape)
    if len(code.bottoms) >= 2:
        factor = code.layer.bottom_shapes[1]
        assert factor is not None
        start = axis_index(code.layer, p.get("axis", 1), ndim) if factor else 0
        if not factor or start != 0 or (code.layer.type == "Scale" and bias):
            raise NotGenerated(f"a two-bottom {code.layer.type} from axis {start} (only axis 0, no learned bias)")
        op = "add" if code.layer.type == "Bias" else "mul"
        full = tuple((*factor, *[1] * (ndim - len(factor))))
        code.helpers.add("CaffeAlong")
        nhwc = code.layout.channels_last
        code.assign(f'CaffeAlong("{op}", {full[1:]}, {nhwc and len(factor) == 4}, {nhwc and ndim == 4}, '
                    f"name={_q(code.name)})"
                    f"([{code.x}, {code.bottoms[1]}])")
        return
    shape = broadcast_shape(code.layer, p, code.shape)
    assert shape is not None
    factor = tuple(int(d) for d in shape if d is not None)
    start = axis_index(code.layer, p.get("axis", 1), ndim) if factor else 0
    held = _broadcast_held(code.layout, code.shape, start, factor)
    blobs = [_f32(b).reshape(factor) for b in code.layer.blobs]
    arrays = [np.ascontiguousarray(b.reshape([1] * start + list(factor) + [1] * (ndim - start - len(factor)))
                                   .transpose(code.layout.held(ndim))).reshape(held) for b in blobs]
    mode = "add" if code.layer.type == "Bias" else "mul_add" if bias else "mul"
    code.helpers.add("CaffeScale")
    code.assign(f'CaffeScale("{mode}", {held}, name={_q(code.name)})({code.x})')
    code.tensors.append((code.name, arrays))


@_emits("Eltwise")
def eltwise(code: KerasCode) -> None:
    """Add / Multiply / Maximum; SUM with coefficients other than 1 is `CaffeSum` (``sum of coeff[i] * bottom[i]``
    in bottom order, as Caffe's axpy loop)."""
    kind = layer_type("Eltwise")
    operation = kind.operation(code.layer)  # type: ignore[attr-defined]
    coeffs = [float(np.float32(c)) for c in kind.coefficients(code.layer, len(code.bottoms))]  # type: ignore[attr-defined]
    if operation == "SUM" and any(c != 1 for c in coeffs):
        code.helpers.add("CaffeSum")
        code.assign(f"CaffeSum([{', '.join(number(c) for c in coeffs)}], name={_q(code.name)})"
                    f"([{', '.join(code.bottoms)}])")
        return
    layer = {"SUM": "Add", "PROD": "Multiply", "MAX": "Maximum"}[operation]
    code.assign(f"layers.{layer}(name={_q(code.name)})([{', '.join(code.bottoms)}])")


@_emits("Concat")
def concat(code: KerasCode) -> None:
    axis = concat_axis(code.layer, len(code.shape))
    if len(code.bottoms) == 1:
        code.assign(f"layers.Identity(name={_q(code.name)})({code.x})")
        return
    code.assign(f"layers.Concatenate(axis={code.layout.axis(axis, len(code.shape))}, name={_q(code.name)})"
                f"([{', '.join(code.bottoms)}])")


@_emits("Slice")
def slice_layer(code: KerasCode) -> None:
    """`CaffeSlice`: the bottom cut along the held axis at Caffe's slice points (equal parts if none)."""
    from caffeport.layers.slice import slice_axis

    p = code.params()
    axis = slice_axis(code.layer, len(code.shape))
    size, count = code.shape[axis], len(code.tops)
    points = [int(v) for v in p.get("slice_point", [])] or [size // count * i for i in range(1, count)]
    code.helpers.add("CaffeSlice")
    code.body.append(f"{', '.join(code.tops)}{',' if count == 1 else ''} = CaffeSlice("
                     f"{code.layout.axis(axis, len(code.shape))}, {points}, name={_q(code.name)})({code.x})")


@_emits("Split")
def split(code: KerasCode) -> None:
    """Caffe's Split: every top is the bottom (an Identity layer each, the first of the Caffe layer's name)."""
    for i, top in enumerate(code.tops):
        name = code.name if i == 0 else code.sub(f"top{i}")
        code.body.append(f"{top} = layers.Identity(name={_q(name)})({code.x})")


@_emits("Embed")
def embed(code: KerasCode) -> None:
    """`CaffeEmbed`: each input value, truncated to an int, selects a row of the (input_dim, num_output) weight,
    plus the bias; the top is the input's Caffe shape with num_output appended (a 4-D input is put back in NCHW
    order first, a 3-D one gives a 4-D top, held as `Layout` says)."""
    p = code.params()
    ndim = len(code.shape)
    bias = bool(p.get("bias_term", True))
    weight = _f32(code.layer.blobs[0]).reshape(int(p["input_dim"]), int(p["num_output"]))
    code.helpers.add("CaffeEmbed")
    x = _caffe_order(code, code.x, ndim)
    x = f"CaffeEmbed({weight.shape}, {bias}, name={_q(code.name)})({x})"
    code.assign(_held_order(code, x, ndim + 1))
    code.tensors.append((code.name, [weight, _f32(code.layer.blobs[1]).reshape(-1)] if bias else [weight]))


@_emits("LSTM")
def lstm(code: KerasCode) -> None:
    """`CaffeLSTM`: Caffe's unrolled LSTM over axis 0 (time, which is the Keras tensors' first axis here) of x
    (T, N, ...) with cont (T, N); h_0 = c_0 = 0 (a fresh net's first Forward, as the reference). Per step the
    previous h is multiplied by cont_t, ``gates = W_hh (cont h) + W_ih x_t + b``; the torch backend has put the
    gate blocks in i, f, g, o order; ``f = cont_t * sigmoid``, ``c = f c + i g``, ``h = o tanh(c)``. A static
    input or ``expose_hidden`` is not generated."""
    p = code.params()
    if len(code.bottoms) != 2 or p.get("expose_hidden", False):
        raise NotGenerated("an LSTM with a static input or expose_hidden")
    if len(code.shape) == 4 or len(code.layer.bottom_shapes[1] or ()) != 2:
        raise NotGenerated("an LSTM of 4-D x or of cont other than (T, N)")
    blobs = dict(zip(code.layer.weight_names, code.layer.blobs, strict=True))
    hidden = int(p["num_output"])
    arrays = [_f32(blobs["weight_ih"]).reshape(4 * hidden, -1).T, _f32(blobs["weight_hh"]).reshape(4 * hidden, -1).T,
              _f32(blobs["bias_ih"]).reshape(-1) + _f32(blobs.get("bias_hh", np.zeros(4 * hidden))).reshape(-1)]
    code.helpers.add("CaffeLSTM")
    code.assign(f"CaffeLSTM({code.shape[1]}, {arrays[0].shape[0]}, {hidden}, name={_q(code.name)})"
                f"([{code.x}, {code.bottoms[1]}])")
    code.tensors.append((code.name, [np.ascontiguousarray(a) for a in arrays]))


@_emits("DetectionOutput")
def detection_output(code: KerasCode) -> None:
    """`CaffeDetectionOutput`: SSD's decode, per-class NMS and keep_top_k in numpy (``ssd_detections``, the rules
    of `caffeport.layers.detection_output` restated), on the eager values."""
    options = ssd_arguments(code.params(), len(code.bottoms))
    ranks = [len(s) for s in code.layer.bottom_shapes[:3]]  # type: ignore[arg-type]
    code.helpers |= {"CaffeDetectionOutput", "ssd_detections"}
    code.assign(f"CaffeDetectionOutput({ranks}, {options}{code.layout.option()}, name={_q(code.name)})"
                f"([{', '.join(code.bottoms[:3])}])")


@_emits("LRN")
def lrn(code: KerasCode) -> None:
    """`CaffeLRN` on the held input: ACROSS_CHANNELS ``x * (k + alpha / size * window sum of x^2)^-beta``
    over a zero-padded channel window, WITHIN_CHANNEL ``x * (1 + alpha * avg(x^2))^-beta`` over a size x size
    zero-padded spatial window divided by ``size^2`` (``k`` unused there), as `caffeport.layers.lrn` states."""
    p = code.params()
    size = int(p.get("local_size", 5))
    region = p.get("norm_region", "ACROSS_CHANNELS")
    region = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}.get(region, str(region))
    if len(code.shape) != 4 or region not in ("ACROSS_CHANNELS", "WITHIN_CHANNEL"):
        raise NotGenerated(f"norm_region {region} over a {len(code.shape)}-D input")
    code.helpers.add("CaffeLRN")
    code.assign(f'CaffeLRN("{region}", {size}, {number(p.get("alpha", 1.0))}, {number(p.get("beta", 0.75))}, '
                f"{number(p.get('k', 1.0))}{code.layout.option()}, name={_q(code.name)})({code.x})")


@_emits("Normalize")
def normalize(code: KerasCode) -> None:
    """`CaffeNormalize` (SSD): L2 norm over the whole sample or over channels (``eps`` inside the root), then
    the learned scale (one value, or one per channel); the channel axis is the held one."""
    p = code.params()
    ndim = len(code.shape)
    if not 2 <= ndim <= 4:
        raise NotGenerated(f"Normalize of a {ndim}-D bottom")
    shared = bool(p.get("channel_shared", True))
    weight = _f32(code.layer.blobs[0]).reshape(-1)[: 1 if shared else None]
    code.helpers.add("CaffeNormalize")
    code.assign(f"CaffeNormalize({bool(p.get('across_spatial', True))}, {code.layout.axis(1, ndim)}, {weight.size}, "
                f"{number(p.get('eps', 1e-10))}, name={_q(code.name)})({code.x})")
    code.tensors.append((code.name, [weight]))


@_emits("Interp")
def interp(code: KerasCode) -> None:
    """`CaffeInterp`: crop by the non-positive pads, then corner-aligned bilinear taps in float32 as
    ``caffe_cpu_interp2`` (sizes from ``InterpLayer::Reshape`` for the prototxt's input)."""
    from caffeport.layers.interp import interp_size

    if len(code.bottoms) != 1 or len(code.shape) != 4:
        raise NotGenerated("an Interp of other than one 4-D bottom")
    p = code.params()
    h_eff, w_eff, out_h, out_w = interp_size(code.layer, code.shape[2], code.shape[3])
    start = -ints(p.get("pad_beg"))[-1] if ints(p.get("pad_beg")) else 0
    code.helpers.add("CaffeInterp")
    code.assign(f"CaffeInterp({start}, ({h_eff}, {w_eff}), ({out_h}, {out_w}){code.layout.option()}, "
                f"name={_q(code.name)})({code.x})")


@_emits("PriorBox")
def prior_box(code: KerasCode) -> None:
    """`CaffeConstant`: the priors for the prototxt's sizes, computed now by the reference's own PriorBox (they
    depend on the bottoms' shapes only); held as (1, 2, K) in Caffe's order, as weights.h5's one array."""
    shapes = code.layer.bottom_shapes
    bottoms = [np.zeros(shape, np.float32) for shape in shapes]  # type: ignore[arg-type]
    (priors,) = layer_type("PriorBox").forward(code.layer, bottoms)
    priors = _f32(priors)
    priors = np.ascontiguousarray(priors.transpose(code.layout.held(priors.ndim)))
    code.helpers.add("CaffeConstant")
    code.assign(f"CaffeConstant({tuple(priors.shape)}, name={_q(code.name)})([{', '.join(code.bottoms)}])")
    code.tensors.append((code.name, [priors]))


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
    input), as Caffe counts it. ``data_format`` as Keras' own pooling layers take it."""

    def __init__(self, method, kernel, stride, pad, ceil=True, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.method, self.kernel, self.stride, self.pad, self.ceil = method, kernel, stride, pad, ceil
        self.data_format, self.rows = data_format, 1 if data_format == "channels_last" else 2

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
        shape, r = list(shape), self.rows
        shape[r : r + 2] = self._sizes(shape[r], 0)[0], self._sizes(shape[r + 1], 1)[0]
        return tuple(shape)

    def call(self, x):
        r = self.rows
        (_, extra_h, count_h), (_, extra_w, count_w) = self._sizes(x.shape[r], 0), self._sizes(x.shape[r + 1], 1)
        pads = [[0, 0]] * 4
        pads[r : r + 2] = [self.pad[0], max(extra_h, 0)], [self.pad[1], max(extra_w, 0)]
        if self.method == "MAX":
            x = keras.ops.pad(x, pads, constant_values=-3.4e38)
            return keras.ops.max_pool(x, self.kernel, self.stride, padding="valid", data_format=self.data_format)
        x = keras.ops.pad(x, pads)
        mean = keras.ops.average_pool(x, self.kernel, self.stride, padding="valid", data_format=self.data_format)
        scale = (self.kernel[0] * self.kernel[1]) / np.outer(count_h, count_w).astype("float32")
        return mean * keras.ops.convert_to_tensor(scale[None, :, :, None] if r == 1 else scale[None, None])''',
    "CaffeCrop": '''class CaffeCrop(keras.layers.Layer):
    """Caffe's Crop: per axis after the batch, ``size`` values from ``start`` (None: the axis kept whole)."""

    def __init__(self, starts, sizes, **kwargs):
        super().__init__(**kwargs)
        self.starts, self.sizes = starts, sizes

    def call(self, x):
        window = [slice(None)] + [slice(None) if n is None else slice(s, s + n)
                                  for s, n in zip(self.starts, self.sizes)]
        return x[tuple(window)]''',
    "CaffeSubsample": '''class CaffeSubsample(keras.layers.Layer):
    """Every ``stride``-th row and column from the first: a strided convolution from its stride-1 output (Keras'
    Conv2D takes no stride with a dilation); ``data_format`` as Keras' Conv2D takes it."""

    def __init__(self, stride, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.stride, self.data_format = stride, data_format

    def call(self, x):
        (sh, sw) = self.stride
        return x[:, ::sh, ::sw, :] if self.data_format == "channels_last" else x[:, :, ::sh, ::sw]''',
    "CaffePower": '''class CaffePower(keras.layers.Layer):
    """Caffe's Power: ``(shift + scale * x) ** power``; ``constant`` (given when ``power * scale`` is 0) whatever
    the input, as Caffe does not read it then."""

    def __init__(self, power, scale, shift, constant=None, **kwargs):
        super().__init__(**kwargs)
        self.power, self.scale, self.shift, self.constant = power, scale, shift, constant

    def call(self, x):
        if self.constant is not None:
            return keras.ops.full_like(x, self.constant)
        y = x * self.scale if self.scale != 1 else x
        y = y + self.shift if self.shift != 0 else y
        return keras.ops.power(y, self.power) if self.power != 1 else keras.ops.copy(y)''',
    "CaffeScale": '''class CaffeScale(keras.layers.Layer):
    """Caffe's Scale / Bias with learned operands, stored shaped to broadcast over the (held) input:
    ``mul`` is ``x * w``, ``mul_add`` ``x * w + b``, ``add`` ``x + b``."""

    def __init__(self, mode, shape, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode
        count = 2 if mode == "mul_add" else 1
        self.operands = [self.add_weight(shape=shape, initializer="zeros", name=f"operand_{i}") for i in range(count)]

    def call(self, x):
        if self.mode == "add":
            return x + self.operands[0]
        y = x * self.operands[0]
        return y + self.operands[1] if self.mode == "mul_add" else y''',
    "CaffeAlong": '''class CaffeAlong(keras.layers.Layer):
    """Caffe's two-bottom Scale (``mul``) / Bias (``add``) from axis 0: the operand taken to Caffe's order
    (from NHWC when ``operand_nhwc``), reshaped to span the input's first axes (``shape``: Caffe's dims after the
    batch), then NHWC again when the input is (``input_nhwc``)."""

    def __init__(self, op, shape, operand_nhwc, input_nhwc, **kwargs):
        super().__init__(**kwargs)
        self.op, self.shape, self.operand_nhwc, self.input_nhwc = op, tuple(shape), operand_nhwc, input_nhwc

    def call(self, inputs):
        x, f = inputs
        if self.operand_nhwc:
            f = keras.ops.transpose(f, (0, 3, 1, 2))
        f = keras.ops.reshape(f, (-1, *self.shape))
        if self.input_nhwc:
            f = keras.ops.transpose(f, (0, 2, 3, 1))
        return x * f if self.op == "mul" else x + f''',
    "CaffeSum": '''class CaffeSum(keras.layers.Layer):
    """Caffe's Eltwise SUM with coefficients: ``coeff[0] * b0 + coeff[1] * b1 + ...`` in bottom order."""

    def __init__(self, coeffs, **kwargs):
        super().__init__(**kwargs)
        self.coeffs = coeffs

    def call(self, inputs):
        total = inputs[0] * self.coeffs[0]
        for coeff, x in zip(self.coeffs[1:], inputs[1:]):
            total = total + x * coeff
        return total''',
    "CaffeEmbed": '''class CaffeEmbed(keras.layers.Layer):
    """Caffe's Embed: each value, truncated to an int, selects a row of ``weight`` (input_dim, num_output);
    then the bias is added."""

    def __init__(self, shape, bias, **kwargs):
        super().__init__(**kwargs)
        self.weight = self.add_weight(shape=shape, initializer="zeros", name="weight")
        self.bias = self.add_weight(shape=shape[1:], initializer="zeros", name="bias") if bias else None

    def call(self, x):
        y = keras.ops.take(self.weight, keras.ops.cast(x, "int32"), axis=0)
        return y if self.bias is None else y + self.bias''',
    "CaffeLSTM": '''class CaffeLSTM(keras.layers.Layer):
    """Caffe's LSTM over the first axis (time) of x (T, N, ...) with cont (T, N), from zero states: per step
    ``h = cont_t h``, ``gates = h W_hh + x_t W_ih + b`` split i, f, g, o; ``f = cont_t * sigmoid``;
    ``c = f c + sigmoid(i) tanh(g)``; ``h = sigmoid(o) tanh(c)``; the top is every step's h."""

    def __init__(self, streams, inputs, hidden, **kwargs):
        super().__init__(**kwargs)
        self.streams, self.hidden = streams, hidden
        self.w_ih = self.add_weight(shape=(inputs, 4 * hidden), initializer="zeros", name="w_ih")
        self.w_hh = self.add_weight(shape=(hidden, 4 * hidden), initializer="zeros", name="w_hh")
        self.b = self.add_weight(shape=(4 * hidden,), initializer="zeros", name="b")

    def compute_output_shape(self, shapes):
        return (shapes[0][0], self.streams, self.hidden)

    def call(self, inputs):
        x, cont = inputs
        steps, n, size = x.shape[0], self.streams, self.hidden
        x = keras.ops.matmul(keras.ops.reshape(x, (steps, n, -1)), self.w_ih) + self.b
        h = keras.ops.zeros((n, size), x.dtype)
        c = keras.ops.zeros((n, size), x.dtype)
        out = []
        for t in range(steps):
            keep = keras.ops.reshape(cont[t], (n, 1))
            gates = keras.ops.matmul(h * keep, self.w_hh) + x[t]
            i, f, g, o = (gates[:, k * size : (k + 1) * size] for k in range(4))
            c = keep * keras.ops.sigmoid(f) * c + keras.ops.sigmoid(i) * keras.ops.tanh(g)
            h = keras.ops.sigmoid(o) * keras.ops.tanh(c)
            out.append(h)
        return keras.ops.stack(out, axis=0)''',
    "ssd_detections": SSD_DETECTIONS.strip("\n"),
    "CaffeDetectionOutput": '''class CaffeDetectionOutput(keras.layers.Layer):
    """SSD's DetectionOutput, computed by ``ssd_detections`` with numpy on the eager values (so the model must run
    eagerly, not under jit). 4-D inputs and the (1, 1, R, 7) top are held as ``data_format`` says, as every 4-D
    top of this file: channels_last, (1, R, 7, 1); channels_first, Caffe's (1, 1, R, 7)."""

    OPTIONS = ("num_classes", "share", "background", "code_type", "in_target", "keep_top_k", "score_threshold",
               "nms_threshold", "eta", "top_k")

    def __init__(self, ranks, data_format="channels_last", **kwargs):
        self.options = {key: kwargs.pop(key) for key in self.OPTIONS}  # ssd_detections' arguments
        super().__init__(**kwargs)
        self.ranks, self.nhwc = ranks, data_format == "channels_last"

    def compute_output_shape(self, shapes):
        return (1, None, 7, 1) if self.nhwc else (1, 1, None, 7)

    def call(self, inputs):
        loc, conf, prior = (keras.ops.convert_to_numpy(x).astype(np.float32) for x in inputs[:3])
        loc, conf, prior = (np.transpose(x, (0, 3, 1, 2)) if rank == 4 and self.nhwc else x
                            for x, rank in zip((loc, conf, prior), self.ranks))
        rows = ssd_detections(loc, conf, prior, **self.options)
        return keras.ops.convert_to_tensor(rows[None, :, :, None] if self.nhwc else rows[None, None])''',
    "CaffeLRN": '''class CaffeLRN(keras.layers.Layer):
    """Caffe's LRN, ``p = (size - 1) // 2``. ACROSS_CHANNELS: ``x * (k + alpha / size * sum of x^2 over
    channels c-p..c+p)^-beta``, channels outside counting 0. WITHIN_CHANNEL: ``x * (1 + alpha * avg)^-beta``, avg
    the size x size zero-padded window sum of x^2 divided by ``size^2`` (``k`` unused). ``data_format`` as Keras'
    image layers take it."""

    def __init__(self, region, size, alpha, beta, k, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.region, self.size, self.alpha, self.beta, self.k = region, size, alpha, beta, k
        self.channels, self.rows = (3, 1) if data_format == "channels_last" else (1, 2)

    @staticmethod
    def _window(x, axis, start, size):
        """``x`` cut to ``size`` entries from ``start`` along ``axis``."""
        index = [slice(None)] * 4
        index[axis] = slice(start, start + size)
        return x[tuple(index)]

    def call(self, x):
        p, size = (self.size - 1) // 2, self.size
        square = x * x
        pads = [[0, 0] for _ in range(4)]
        if self.region == "ACROSS_CHANNELS":
            c = self.channels
            pads[c] = [p, p]
            padded = keras.ops.pad(square, pads)
            scale = keras.ops.full_like(x, self.k)
            for tap in range(size):
                scale = scale + (self.alpha / size) * self._window(padded, c, tap, x.shape[c])
            return x * keras.ops.power(scale, -self.beta)
        if self.alpha * self.beta == 0:
            return keras.ops.copy(x)
        r = self.rows
        pads[r] = pads[r + 1] = [p, p]
        padded = keras.ops.pad(square, pads)
        total = keras.ops.zeros_like(x)
        for dy in range(size):
            for dx in range(size):
                total = total + self._window(self._window(padded, r, dy, x.shape[r]), r + 1, dx, x.shape[r + 1])
        return x * keras.ops.power(self.alpha * (total / float(size * size)) + 1.0, -self.beta)''',
    "CaffeNormalize": '''class CaffeNormalize(keras.layers.Layer):
    """SSD's Normalize: ``x / sqrt(sum x^2 + eps)`` over the whole sample (``across_spatial``) or over the channel
    ``axis`` (``eps`` inside the root in both), times the learned scale (one value or one per channel)."""

    def __init__(self, across_spatial, axis, count, eps, **kwargs):
        super().__init__(**kwargs)
        self.across_spatial, self.axis, self.eps = across_spatial, axis, eps
        self.scale = self.add_weight(shape=(count,), initializer="ones", name="scale")

    def call(self, x):
        if self.across_spatial:
            total = keras.ops.sum(x * x, axis=tuple(range(1, len(x.shape))), keepdims=True)
            y = x * (1.0 / keras.ops.sqrt(total + self.eps))
        else:
            y = x / keras.ops.sqrt(self.eps + keras.ops.sum(x * x, axis=self.axis, keepdims=True))
        scale = keras.ops.reshape(self.scale, (-1,) + (1,) * (len(x.shape) - 1 - self.axis))
        return y * scale''',
    "CaffeInterp": '''class CaffeInterp(keras.layers.Layer):
    """DeepLab/PSPNet's Interp: the ``size`` window from row and column ``start`` (the crop of non-positive
    pads), then per axis ``r = (in - 1) / (out - 1)`` in float32, output ``y`` reading rows ``int(r * y)`` and the
    next (the last row twice) weighted ``1 - f`` and ``f``: corner-aligned bilinear, in Caffe's order of
    operations; a crop already of the output size is copied. ``data_format`` as Keras' image layers take it."""

    def __init__(self, start, size, out, data_format="channels_last", **kwargs):
        super().__init__(**kwargs)
        self.start, self.size, self.out = start, tuple(size), tuple(out)
        self.rows = 1 if data_format == "channels_last" else 2

    @staticmethod
    def _taps(size_in, size_out):
        ratio = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0.0)
        pos = ratio * np.arange(size_out, dtype=np.float32)
        low = pos.astype(np.int64)
        high = low + (low < size_in - 1)
        w_high = pos - low.astype(np.float32)
        return low, high, np.float32(1.0) - w_high, w_high

    def compute_output_shape(self, shape):
        shape, r = list(shape), self.rows
        shape[r : r + 2] = self.out
        return tuple(shape)

    def call(self, x):
        (h, w), s, r = self.size, self.start, self.rows
        index = [slice(None)] * 4
        index[r : r + 2] = slice(s, s + h), slice(s, s + w)
        x = x[tuple(index)]
        if self.size == self.out:
            return keras.ops.copy(x)
        y0, y1, ly0, ly1 = self._taps(h, self.out[0])
        x0, x1, lx0, lx1 = self._taps(w, self.out[1])

        def along(weights, axis):  # the weights shaped to broadcast along ``axis``
            return keras.ops.convert_to_tensor(weights.reshape([-1 if a == axis else 1 for a in range(4)]))

        rows0, rows1 = keras.ops.take(x, y0, axis=r), keras.ops.take(x, y1, axis=r)
        lx0, lx1 = along(lx0, r + 1), along(lx1, r + 1)
        top = keras.ops.take(rows0, x0, axis=r + 1) * lx0 + keras.ops.take(rows0, x1, axis=r + 1) * lx1
        bottom = keras.ops.take(rows1, x0, axis=r + 1) * lx0 + keras.ops.take(rows1, x1, axis=r + 1) * lx1
        return along(ly0, r) * top + along(ly1, r) * bottom''',
    "CaffeConstant": '''class CaffeConstant(keras.layers.Layer):
    """A top that depends only on its bottoms' shapes (SSD's PriorBox), computed when this file was made for the
    prototxt's input sizes and loaded from the weights file; the bottoms are taken only to place it in the graph."""

    def __init__(self, shape, **kwargs):
        super().__init__(**kwargs)
        self.value = self.add_weight(shape=shape, initializer="zeros", trainable=False, name="value")

    def compute_output_shape(self, shapes):
        return tuple(self.value.shape)

    def call(self, inputs):
        return keras.ops.convert_to_tensor(self.value)''',
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
    #: what the README adds about the conversion (``--matlab``), or nothing
    note: str = ""
    layout: Layout = field(default_factory=lambda: CHANNELS_LAST)


#: types a backend splits off another layer (the torch backend: RNN's output weights); written with that layer
_SPLIT_OFF = frozenset({"EmbedBias", "RNNOutput"})
def _emit(code: KerasCode) -> str | None:
    """Run the layer's Keras emitter; the reason it cannot be generated, or None (`caffeport.codegen.common.emit`:
    DetectionOutput, whose top shape depends on the values, needs only its bottoms' shapes)."""
    return emit(code, KERAS_EMITTERS.get(code.layer.type), "Keras")


def generate(net: Net) -> KerasModel:
    """The ``model.py`` of ``net`` and the weights it loads.

    ``net`` keeps Caffe's layouts (the torch passes, see `caffeport.exporters.keras_code`); its
    ``conversion.data_format`` says how the model holds 4-D tops (`Layout`; None: channels_last).
    """
    if not net.inputs or any(not shape for shape in net.inputs.values()):
        raise CaffeportError("keras-code needs the net's input shapes: give the deploy prototxt")
    layout = Layout(net.conversion.data_format or CHANNELS_LAST.data_format)
    caffe_names = {new: old for old, new in net.conversion.name_map.items()}
    names, variables = _Names(), _Names()  # Keras layer names; the variables holding the tops
    for taken in ("keras", "layers", "np", "h5py", "Path", "tops", "outputs", "build_model", "load_model", "WEIGHTS",
                  "stub", "NAME_MAP", "return_all", *HELPERS):
        variables(taken)
    for layer in net.layers:  # Caffe's names first: a helper layer (``<layer>_pad``) never takes one of them
        if not _fed(net, layer):
            names(caffe_names.get(layer.name, layer.name))
    current = {name: variables(name) for name in net.inputs}
    rewrites = dict.fromkeys(net.inputs, 1)
    body: list[str] = []
    helpers: set[str] = set()
    model = KerasModel(source="", inputs=dict(net.inputs), layout=layout)
    for name, shape in net.inputs.items():
        body.append(f"{current[name]} = keras.Input(shape={layout.shape(tuple(shape))[1:]}, name={_q(name)})")
    for layer in net.layers:
        caffe_name = caffe_names.get(layer.name, layer.name)
        if _fed(net, layer):
            body.extend(f"tops[{_q(f'{caffe_name}/{top}')}] = {current[top]}" for top in layer.tops)
            continue
        if layer.type in _SPLIT_OFF:  # part of the layer before it (a stub): its blobs are kept beside that one's
            if layer.blobs:
                model.stub_blobs.append((names(caffe_name), [np.asarray(b) for b in layer.blobs]))
            continue
        missing = [b for b in layer.bottoms if b not in current]
        if missing:
            raise CaffeportError(f"layer {caffe_name!r}: bottom {', '.join(map(repr, missing))} is produced by no "
                                 "earlier layer and is not a net input")
        for top in layer.tops:  # an in-place top gets a new variable, <top>_2, ... (a key no Caffe name can be)
            rewrites[top] = rewrites.get(top, 0) + 1
        tops = [variables(t) if rewrites[t] == 1 else variables(f"{t}\n{rewrites[t]}") for t in layer.tops]
        code = KerasCode(layer=layer, caffe_name=caffe_name, name=names(caffe_name),
                         bottoms=[current[b] for b in layer.bottoms], tops=tops, names=names, variables=variables,
                         layout=layout)
        reason = _emit(code)
        if reason is not None:
            model.stubs.append(f"{caffe_name!r} ({layer.type}): {reason}")
            code = KerasCode(layer=layer, caffe_name=caffe_name, name=code.name, bottoms=code.bottoms,
                             tops=code.tops, names=names, variables=variables, helpers={"NotGenerated"},
                             layout=layout)
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
    model.note = matlab_note(net)
    model.source = _file(net, model, body, current, sorted(helpers))
    return model


def _file(net: Net, model: KerasModel, body: list[str], current: dict[str, str], helpers: list[str]) -> str:
    sources = "\n".join(f"    {name}  sha256 {digest}" for name, digest in model.sources) or "    (none recorded)"
    stubs = "\n".join(f"    {line}" for line in model.stubs) or "    none"
    layout = model.layout
    inputs = ", ".join(f"{name} {layout.shape(tuple(shape))}" for name, shape in net.inputs.items())
    held = "NHWC" if layout.channels_last else "NCHW"
    usage = textwrap.fill(
        f"``model = load_model()`` builds the keras.Model ({layout.data_format}: {held} inputs {inputs}) and loads "
        f"the weights beside this file ({WEIGHTS_FILE}); it returns a dict keyed by the net's output tops "
        f"({', '.join(model.outputs)}). ``load_model(return_all=True)`` also outputs every top as "
        f'``"<layer>/<top>"`` (4-D tops {held}, the others in Caffe\'s axis order), the keys of '
        "``caffeport run --all-layers``. " + _backend_note(layout) + matlab_note(net), 110, break_long_words=False)
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
    lines += ["", *_wrapped(f"    outputs = {{{returned}}}"),
              *_wrapped(f"    return keras.Model({_inputs_list(net, current)}, {{**outputs, **tops}} if return_all "
                        f"else outputs, name={name})"), "", "",
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


def _backend_note(layout: Layout) -> str:
    """What a channels_first model needs: Keras' TensorFlow backend convolves only NHWC on a CPU."""
    if layout.channels_last:
        return ""
    return ("Keras' TensorFlow backend runs channels_first convolutions only on a GPU: on a CPU, run this model "
            "under Keras' JAX or torch backend (KERAS_BACKEND=jax or torch). ")


def _inputs_list(net: Net, current: dict[str, str]) -> str:
    return "[" + ", ".join(current[name] for name in net.inputs) + "]"


def readme(model: KerasModel) -> str:
    """The folder's short README."""
    sources = "\n".join(f"- `{name}`: sha256 `{digest}`" for name, digest in model.sources)
    stubs = "\n".join(f"- {line}" for line in model.stubs) or "none"
    held = [model.layout.shape(tuple(s)) for s in model.inputs.values()]
    notes = "\n\n".join(note for note in (_backend_note(model.layout).strip(), model.note) if note)
    return f"""# Keras model

Generated by caffeport {__version__} (`caffeport convert -f keras-code`) from:

{sources}

- `model.py`: the Keras 3 functional model, standalone (imports only keras, numpy and h5py);
- `{WEIGHTS_FILE}`: its weights, one group per layer (`load_model()` sets them).

```python
import numpy as np
from model import load_model

model = load_model()
outputs = model([{", ".join(f"np.zeros({s}, 'float32')" for s in held)}])
```

Inputs are {"NHWC" if model.layout.channels_last else "NCHW"} ({model.layout.data_format}); outputs a dict keyed by \
the net's output tops ({", ".join(f"`{o}`" for o in model.outputs)}).
{chr(10) + notes + chr(10) if notes else ""}
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

