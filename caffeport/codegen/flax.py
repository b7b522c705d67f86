'''A standalone Flax (linen) ``model.py`` generated from a Caffe net (``caffeport convert -f flax-code``).

The framework-neutral parts are shared with the other generators
(`caffeport.codegen.common`: identifier names, stubs' params, line wrapping,
the sources' sha256, `emit`): only the per-layer code and the file's frame
are Flax's. The net comes after the torch backend (Caffe's layouts,
BatchNorm's scale factor divided out and a following Scale folded in); this
module reorders the weights to Flax's NHWC layouts itself (HWIO kernels,
(in, out) dense kernels).

The file holds one ``nn.Module`` class: ``setup`` makes one submodule per
weighted Caffe layer, named after it (`NAME_MAP` in the file where Caffe's
name is not a Python identifier), and ``__call__`` computes the layers in
prototxt order, its variables the Caffe top names made identifiers, each
layer's Caffe shapes in a comment. Tensors are NHWC: a 4-D Caffe blob
(N, C, H, W) is held as (N, H, W, C), every other rank in Caffe's order, so
the layers whose rule is written in Caffe's order (Flatten, Reshape, an
InnerProduct over other axes than 1..) view a 4-D input as NCHW first.
Caffe's rules Flax lacks are small helpers in the file
(`caffeport.codegen.flax_helpers`).

The weights are one msgpack file in Flax's own serialisation
(``flax.serialization.msgpack_restore`` reads it), written by the ``-f flax``
exporter's streaming writer (`caffeport.exporters.flax`):
``{"params": {...}, "batch_stats": {...}}`` keyed by the submodule names, and
``"constants"`` for PriorBox's boxes when the net has any.

A layer this generator does not handle (an unknown type, a form its emitter
refuses, or unknown shapes) becomes a ``NotGenerated`` submodule whose call
raises NotImplementedError naming the layer, its type and its params; its
blobs are still written (``params/<name>/<weight name>``, in Caffe's layout) and
the rest of the model is generated.
'''

from __future__ import annotations

import builtins
import keyword
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caffeport import __version__
from caffeport.codegen.common import Names, emit, sha256
from caffeport.codegen.common import comment as _comment
from caffeport.codegen.common import fed as _fed
from caffeport.codegen.common import quote as _q
from caffeport.codegen.common import stub_params as _stub_params
from caffeport.codegen.common import wrapped as _wrapped
from caffeport.codegen.flax_helpers import HELPERS, closure
from caffeport.codegen.registry import NotGenerated, number
from caffeport.codegen.ssd_numpy import ssd_arguments
from caffeport.errors import CaffeportError
from caffeport.forward import net_outputs
from caffeport.ir import Layer, Net
from caffeport.layers import layer_type
from caffeport.layers.concat import concat_axis
from caffeport.layers.crop import crop_offsets
from caffeport.layers.eltwise import OPERATIONS
from caffeport.layers.fields import axis_index, enum_name, ints, proto_shape
from caffeport.layers.permute import full_order
from caffeport.layers.pooling import pool_method, rounds_down
from caffeport.layers.scale import broadcast_shape
from caffeport.layers.slice import slice_axis
from caffeport.layers.windows import conv_window, pool_window

WEIGHTS_FILE = "weights.msgpack"

#: names an nn.Module has already (``self.apply = ...`` would break it), and the names the file uses itself
_TAKEN = frozenset({
    "apply", "bind", "clone", "copy", "get_variable", "has_rng", "has_variable", "init", "init_with_output",
    "is_initializing", "is_mutable_collection", "lazy_init", "make_rng", "module_paths", "param", "path", "perturb",
    "put_variable", "setup", "sow", "tabulate", "unbind", "variable", "variables", "name", "parent", "scope",
    "self", "jax", "jnp", "nn", "np", "Path", "msgpack_restore", "keep", "tops", "outputs", "return_all",
    "WEIGHTS", "NAME_MAP", "load_model", "load_variables", "annotations", *HELPERS,
})
#: types a backend splits off another layer (their blobs belong to it)
_SPLIT_OFF = frozenset({"EmbedBias", "RNNOutput"})
#: (Flax collection, leaf path inside the module, float32 array)
Leaf = tuple[str, tuple[str, ...], np.ndarray]


@dataclass
class FlaxCode:
    """One layer handed to an emitter, and the code it writes: ``setup`` lines, ``__call__`` lines, variables."""

    layer: Layer
    caffe_name: str
    #: ``self.<attr>`` when the emitter builds a submodule
    attr: str
    #: Python variable names of the bottoms and the tops, in order
    bottoms: list[str]
    tops: list[str]
    init: list[str] = field(default_factory=list)
    body: list[str] = field(default_factory=list)
    helpers: set[str] = field(default_factory=set)
    leaves: list[Leaf] = field(default_factory=list)
    #: ``return_all`` records this layer's tops (False for a BatchNorm whose Scale is folded into it)
    recorded: bool = True

    @property
    def x(self) -> str:
        return self.bottoms[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """The first bottom's Caffe shape (known: the generator stubs layers whose shapes are not)."""
        shape = self.layer.bottom_shapes[0]
        assert shape is not None
        return tuple(shape)

    @property
    def out_shape(self) -> tuple[int, ...]:
        shape = self.layer.top_shapes[0]
        assert shape is not None
        return tuple(shape)

    def params(self, key: str | None = None) -> dict[str, Any]:
        key = key or layer_type(self.layer.type).param
        return self.layer.param(key) if key else {}

    def assign(self, expression: str) -> None:
        if expression != self.tops[0]:
            self.body.append(f"{self.tops[0]} = {expression}")

    def module(self, constructor: str, leaves: list[tuple[str, str, np.ndarray]], *helpers: str) -> str:
        """``self.<attr> = constructor`` in ``setup`` with these (collection, name, array); returns ``self.<attr>``."""
        self.init.append(f"self.{self.attr} = {constructor}")
        self.leaves.extend((collection, (name,), np.array(array, np.float32, order="C"))
                           for collection, name, array in leaves)
        self.helpers.update(helpers)
        return f"self.{self.attr}"


FlaxEmitter = Callable[[FlaxCode], None]
FLAX_EMITTERS: dict[str, FlaxEmitter] = {}


def _emits(*types: str) -> Callable[[FlaxEmitter], FlaxEmitter]:
    def register(function: FlaxEmitter) -> FlaxEmitter:
        for name in types:
            FLAX_EMITTERS[name] = function
        return function

    return register


def nhwc_axis(axis: int, ndim: int) -> int:
    """Caffe's axis in this file's layout: 4-D tensors are NHWC (C last, H and W one up); other ranks unchanged."""
    return (0, 3, 1, 2)[axis] if ndim == 4 else axis


def _f32(blob: object) -> np.ndarray:
    return np.asarray(blob, dtype=np.float32)


def _caffe_view(code: FlaxCode, x: str, ndim: int) -> str:
    """``x`` in Caffe's order (a 4-D NHWC tensor viewed as NCHW)."""
    if ndim != 4:
        return x
    code.helpers.add("to_nchw")
    return f"to_nchw({x})"


def _stored(code: FlaxCode, expression: str, ndim: int) -> str:
    """A Caffe-order result in this file's layout (4-D: back to NHWC)."""
    if ndim != 4:
        return expression
    code.helpers.add("to_nhwc")
    return f"to_nhwc({expression})"


def _pair(values: tuple[int, ...]) -> tuple[int, int]:
    return (int(values[0]), int(values[-1]))


def _options(**values: object) -> str:
    return "".join(f", {key}={value}" for key, value in values.items() if value is not None)


def _weights(code: FlaxCode) -> dict[str, np.ndarray]:
    return {name: _f32(blob) for name, blob in zip(code.layer.weight_names, code.layer.blobs, strict=True)}


# ---------------------------------------------------------------------------- convolution, deconvolution


def _conv_checks(code: FlaxCode) -> None:
    p = code.params("convolution_param")
    if len(code.shape) != 4:
        raise NotGenerated(f"a convolution of a {len(code.shape)}-D input (only 2-D convolutions are generated)")
    if axis_index(code.layer, p.get("axis", 1), len(code.shape)) != 1:
        raise NotGenerated("convolution over axes other than 2.. (convolution_param.axis != 1)")


@_emits("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise")
def convolution(code: FlaxCode) -> None:
    """``nn.Conv`` with Caffe's symmetric padding, stride, dilation and groups; Caffe's (out, in / g, kh, kw) kernel
    is Flax's HWIO (kh, kw, in / g, out). Each bottom gets its own top through the one shared submodule."""
    _conv_checks(code)
    layer = code.layer
    kind = layer_type(layer.type)
    window = conv_window(layer, 2)
    groups = kind.group(layer, code.shape[1])  # type: ignore[attr-defined]
    bias = bool(code.params("convolution_param").get("bias_term", True))
    weight = _f32(layer.blobs[0])
    weight = weight.reshape(weight.shape[0], -1, *window.kernel).transpose(2, 3, 1, 0)
    leaves = [("params", "kernel", weight)] + ([("params", "bias", _f32(layer.blobs[1]))] if bias else [])
    ph, pw = _pair(window.pad)
    padding = f"(({ph}, {ph}), ({pw}, {pw}))"
    options = _options(strides=_pair(window.stride) if any(s != 1 for s in window.stride) else None,
                       padding=padding if any(window.pad) else '"VALID"',
                       kernel_dilation=_pair(window.dilation) if any(d != 1 for d in window.dilation) else None,
                       feature_group_count=groups if groups != 1 else None, use_bias=None if bias else "False")
    module = code.module(f"nn.Conv({weight.shape[3]}, {_pair(window.kernel)}{options})", leaves)
    for bottom, top in zip(code.bottoms, code.tops, strict=True):
        code.body.append(f"{top} = {module}({bottom})")


@_emits("Deconvolution")
def deconvolution(code: FlaxCode) -> None:
    """`CaffeDeconv`: Caffe's output size, groups and dilation (Flax's ConvTranspose has no groups).

    Caffe's kernel (in, out / g, kh, kw) becomes the HWIO kernel of the equivalent convolution: per group in and
    out swapped, both spatial axes flipped, the groups' outputs side by side.
    """
    _conv_checks(code)
    layer = code.layer
    kind = layer_type(layer.type)
    window = conv_window(layer, 2)
    groups = kind.group(layer, code.shape[1])  # type: ignore[attr-defined]
    num_output = kind.num_output(layer, code.shape[1])  # type: ignore[attr-defined]
    bias = bool(code.params("convolution_param").get("bias_term", True))
    weight = _f32(layer.blobs[0])
    cin = weight.shape[0]
    kh, kw = window.kernel[0], window.kernel[-1]
    grouped = weight.reshape(groups, cin // groups, num_output // groups, kh, kw)[:, :, :, ::-1, ::-1]
    kernel = grouped.transpose(3, 4, 1, 0, 2).reshape(kh, kw, cin // groups, num_output)
    leaves = [("params", "kernel", kernel)] + ([("params", "bias", _f32(layer.blobs[1]))] if bias else [])
    options = _options(strides=_pair(window.stride) if any(s != 1 for s in window.stride) else None,
                       padding=_pair(window.pad) if any(window.pad) else None,
                       kernel_dilation=_pair(window.dilation) if any(d != 1 for d in window.dilation) else None,
                       feature_group_count=groups if groups != 1 else None, use_bias=None if bias else "False")
    module = code.module(f"CaffeDeconv({num_output}, {(kh, kw)}{options})", leaves, "CaffeDeconv")
    for bottom, top in zip(code.bottoms, code.tops, strict=True):
        code.body.append(f"{top} = {module}({bottom})")


# ---------------------------------------------------------------------------- pooling, inner_product


@_emits("Pooling")
def pooling(code: FlaxCode) -> None:
    """Global pooling as a reduction over H and W; otherwise `caffe_pool` (Caffe's rounding, clipped divisor)."""
    p = code.params()
    method = pool_method(p.get("pool"))
    if method not in ("MAX", "AVE"):
        raise NotGenerated(f"pool {method} (Caffe has no CPU forward for it)")
    if len(code.tops) > 1:
        raise NotGenerated("the MAX pooling mask top (argmax indices)")
    if len(code.shape) != 4:
        raise NotGenerated("pooling of a non-4-D input")
    if p.get("global_pooling", False):
        reduce = "max" if method == "MAX" else "mean"
        code.assign(f"jnp.{reduce}({code.x}, axis=(1, 2), keepdims=True)")
        return
    window = pool_window(code.layer)
    ceil = "" if not rounds_down(code.layer) else ", ceil=False"
    code.helpers.add("caffe_pool")
    code.assign(f'caffe_pool({code.x}, "{method}", kernel={_pair(window.kernel)}, stride={_pair(window.stride)}, '
                f"pad={_pair(window.pad)}{ceil})")


@_emits("InnerProduct")
def inner_product(code: FlaxCode) -> None:
    """``nn.Dense`` over Caffe's axes from ``axis`` on, flattened in Caffe's C, H, W order.

    Over a 4-D input from axis 1 the kernel's rows are reordered to H, W, C, so the NHWC input flattens as it is;
    over other axes the input is viewed as NCHW first and the result put back.
    """
    p = code.params()
    ndim = len(code.shape)
    axis = axis_index(code.layer, p.get("axis", 1), ndim)
    if p.get("transpose", False):
        raise NotGenerated("inner_product_param.transpose (the weight stored (in, out))")
    bias = bool(p.get("bias_term", True))
    num_output = int(p["num_output"])
    weights = _weights(code)
    kernel = weights["weight"].reshape(num_output, -1)
    if ndim == 4 and axis == 1:
        _, c, h, w = code.shape
        kernel = kernel.reshape(num_output, c, h, w).transpose(0, 2, 3, 1).reshape(num_output, -1)
    leaves = [("params", "kernel", kernel.T)] + ([("params", "bias", weights["bias"])] if bias else [])
    module = code.module(f"nn.Dense({num_output}{'' if bias else ', use_bias=False'})", leaves)
    if ndim == 4 and axis == 1:
        code.body.append("# the kernel's rows are in H, W, C order: the NHWC input flattens as it is")
        code.assign(f"{module}({code.x}.reshape({code.x}.shape[0], -1))")
        return
    x = _caffe_view(code, code.x, ndim)
    if axis != ndim - 1:
        code.assign(_caffe_view(code, code.x, ndim))
        x = code.tops[0]
        code.body.append(f"{x} = {x}.reshape(*{x}.shape[:{axis}], -1)")
    code.assign(_stored(code, f"{module}({x})", len(code.out_shape)))


# ---------------------------------------------------------------------------- activations, prelu, softmax


@_emits("ReLU")
def relu(code: FlaxCode) -> None:
    slope = float(np.float32(code.params().get("negative_slope", 0.0) or 0.0))
    code.assign(f"nn.leaky_relu({code.x}, {number(slope)})" if slope else f"nn.relu({code.x})")


@_emits("Sigmoid")
def sigmoid(code: FlaxCode) -> None:
    code.assign(f"nn.sigmoid({code.x})")


@_emits("TanH")
def tanh(code: FlaxCode) -> None:
    code.assign(f"jnp.tanh({code.x})")


@_emits("AbsVal")
def abs_val(code: FlaxCode) -> None:
    code.assign(f"jnp.abs({code.x})")


@_emits("Power")
def power(code: FlaxCode) -> None:
    """``(shift + scale * x) ** power``; a constant when ``power * scale`` is 0 (Caffe does not read the input)."""
    p = code.params()
    pw, scale, shift = (np.float32(p.get(key, default)) for key, default in
                        (("power", 1.0), ("scale", 1.0), ("shift", 0.0)))
    if pw * scale == 0:
        value = 1.0 if pw == 0 else float(np.float32(np.power(np.float64(shift), pw)))
        code.assign(f"jnp.full_like({code.x}, {number(value)})")
        return
    expression = code.x
    if scale != 1:
        expression = f"{expression} * {number(scale)}"
    if shift != 0:
        expression = f"{expression} + {number(shift)}"
    if pw != 1:
        expression = f"({expression}) ** {number(pw)}"
    code.assign(expression)


@_emits("PReLU")
def prelu(code: FlaxCode) -> None:
    """`ChannelPReLU`: one slope per channel (Caffe's axis 1, last in NHWC), or one with ``channel_shared``."""
    shared = bool(code.params().get("channel_shared", False))
    ndim = len(code.shape)
    slopes = _f32(code.layer.blobs[0]).reshape(-1)
    if shared:
        shape: tuple[int, ...] = ()
        slopes = slopes.reshape(())
    else:
        shape = (code.shape[1],) if ndim in (2, 4) else (code.shape[1], *([1] * (ndim - 2)))
        slopes = slopes.reshape(shape)
    module = code.module(f"ChannelPReLU({shape})", [("params", "negative_slope", slopes)], "ChannelPReLU")
    code.assign(f"{module}({code.x})")


@_emits("Softmax")
def softmax(code: FlaxCode) -> None:
    ndim = len(code.shape)
    axis = nhwc_axis(axis_index(code.layer, code.params().get("axis", 1), ndim), ndim)
    code.assign(f"jax.nn.softmax({code.x}, axis={axis})")


# ---------------------------------------------------------------------------- batch_norm, scale, bias


@_emits("BatchNorm")
def batch_norm(code: FlaxCode) -> None:
    """``nn.BatchNorm`` on running statistics with Caffe's eps; the stored scale factor is divided out already.

    A Scale that follows it is folded in (``scale`` and ``bias``), so this layer's own output is not computed
    alone: ``return_all`` records the value under the Scale's key instead.
    """
    p = code.params()
    if p.get("use_global_stats") is False:
        raise NotGenerated("use_global_stats: false (normalizing with the batch's own statistics)")
    ndim = len(code.shape)
    weights = _weights(code)
    affine = "weight" in weights
    leaves = [("batch_stats", "mean", weights["running_mean"]), ("batch_stats", "var", weights["running_var"])]
    if affine:
        leaves += [("params", "scale", weights["weight"]), ("params", "bias", weights["bias"])]
    axis = nhwc_axis(1, ndim) - ndim
    options = "" if affine else ", use_scale=False, use_bias=False"
    module = code.module(f"nn.BatchNorm(use_running_average=True, axis={axis}, epsilon={number(p.get('eps', 1e-5))}"
                         f"{options})", leaves)
    fused = code.layer.params.get("fused_scale")
    if fused:
        code.recorded = False
        no_bias = "" if fused.get("bias_term", True) else " (no bias_term: zero bias)"
        code.body.append(f"# with Scale {fused['name']!r} folded in{no_bias}")
    code.assign(f"{module}({code.x})")


@_emits("FusedScale")
def fused_scale(code: FlaxCode) -> None:
    """A Scale the torch backend folded into the BatchNorm before it: nothing left to compute."""
    code.body.append("# folded into the BatchNorm before it (its weights are that module's scale and bias)")
    code.assign(code.x)


def _broadcast(code: FlaxCode, blob: object) -> np.ndarray:
    """A learned Scale / Bias operand shaped to broadcast over the bottom as this file lays it out."""
    p = code.params()
    ndim = len(code.shape)
    shape = broadcast_shape(code.layer, p, code.shape)
    assert shape is not None
    factor = tuple(int(d) for d in shape if d is not None)
    axis = axis_index(code.layer, p.get("axis", 1), ndim) if factor else ndim
    full = (1,) * axis + factor + (1,) * (ndim - axis - len(factor)) if factor else (1,) * ndim
    array = _f32(blob).reshape(full)
    return array.transpose(0, 2, 3, 1) if ndim == 4 else array


def _along(code: FlaxCode, operator: str) -> None:
    """``x <operator> y`` with the second bottom broadcast from ``axis`` on, computed in Caffe's order."""
    factor_shape = code.layer.bottom_shapes[1]
    assert factor_shape is not None
    ndim = len(code.shape)
    axis = axis_index(code.layer, code.params().get("axis", 1), ndim) if factor_shape else 0
    code.helpers.add("along")
    y = _caffe_view(code, code.bottoms[1], len(factor_shape))
    product = f"{_caffe_view(code, code.x, ndim)} {operator} along({y}, {axis}, {ndim})"
    code.assign(_stored(code, product, ndim))


@_emits("Scale")
def scale(code: FlaxCode) -> None:
    """A learned factor (`CaffeScale`) or the second bottom's (broadcast from ``axis`` as Caffe does)."""
    bias = bool(code.params().get("bias_term", False))
    if len(code.bottoms) >= 2:
        if bias:
            raise NotGenerated("a two-bottom Scale with a learned bias_term")
        _along(code, "*")
        return
    weights = _weights(code)
    leaves = [("params", "scale", _broadcast(code, weights["weight"]))]
    if bias:
        leaves.append(("params", "bias", _broadcast(code, weights["bias"])))
    shape = tuple(leaves[0][2].shape)
    module = code.module(f"CaffeScale({shape}{', use_bias=True' if bias else ''})", leaves, "CaffeScale")
    code.assign(f"{module}({code.x})")


@_emits("Bias")
def bias_layer(code: FlaxCode) -> None:
    if len(code.bottoms) >= 2:
        _along(code, "+")
        return
    array = _broadcast(code, code.layer.blobs[0])
    module = code.module(f"CaffeBias({tuple(array.shape)})", [("params", "bias", array)], "CaffeBias")
    code.assign(f"{module}({code.x})")


# ---------------------------------------------------------------------------- eltwise, concat, slice, split


@_emits("Eltwise")
def eltwise(code: FlaxCode) -> None:
    """SUM with its coefficients (1 left out), PROD, MAX (``jnp.maximum``, pairwise in bottom order)."""
    kind = layer_type("Eltwise")
    op = enum_name(code.params().get("operation"), OPERATIONS, "SUM")
    coeffs = kind.coefficients(code.layer, len(code.bottoms))  # type: ignore[attr-defined]
    if op == "PROD":
        code.assign(" * ".join(code.bottoms))
    elif op == "MAX":
        expression = code.bottoms[0]
        for bottom in code.bottoms[1:]:
            expression = f"jnp.maximum({expression}, {bottom})"
        code.assign(expression)
    else:
        terms = []
        for coeff, bottom in zip(coeffs, code.bottoms, strict=True):
            c = float(np.float32(coeff))
            terms.append(bottom if c == 1 else f"{number(c)} * {bottom}")
        code.assign(" + ".join(terms))


@_emits("Concat")
def concat(code: FlaxCode) -> None:
    ndim = len(code.shape)
    axis = nhwc_axis(concat_axis(code.layer, ndim), ndim)
    if len(code.bottoms) == 1:
        code.assign(code.x)
        return
    code.assign(f"jnp.concatenate([{', '.join(code.bottoms)}], axis={axis})")


@_emits("Slice")
def slice_(code: FlaxCode) -> None:
    """``jnp.split`` at Caffe's slice points, or into equal parts when none are given."""
    ndim = len(code.shape)
    axis = nhwc_axis(slice_axis(code.layer, ndim), ndim)
    points = ints(code.params().get("slice_point"))
    if len(code.tops) == 1:
        code.assign(code.x)
        return
    parts = points if points else len(code.tops)
    code.body.append(f"{', '.join(code.tops)} = jnp.split({code.x}, {parts}, axis={axis})")


@_emits("Split")
def split(code: FlaxCode) -> None:
    code.body.append(f"{' = '.join(code.tops)} = {code.x}")


@_emits("Dropout")
def dropout(code: FlaxCode) -> None:
    code.body.append("# the identity at test time")
    code.assign(code.x)


# ---------------------------------------------------------------------------- flatten, reshape, permute, crop


@_emits("Flatten")
def flatten(code: FlaxCode) -> None:
    """Caffe's Flatten of axes ``axis``..``end_axis`` in Caffe's order (a 4-D input viewed as NCHW first)."""
    p = code.params()
    ndim = len(code.shape)
    start = axis_index(code.layer, p.get("axis", 1), ndim)
    end = axis_index(code.layer, p.get("end_axis", -1), ndim, "end_axis")
    x = _caffe_view(code, code.x, ndim)
    if x != code.x:
        code.assign(x)
        x = code.tops[0]
    dims = [f"{x}.shape[{i}]" for i in range(start)] + ["-1"] + [f"{x}.shape[{i}]" for i in range(end + 1, ndim)]
    code.assign(_stored(code, f"{x}.reshape({', '.join(dims)})", len(code.out_shape)))


@_emits("Reshape")
def reshape(code: FlaxCode) -> None:
    """A plain reshape in Caffe's order; Caffe's 0 dims copy the input's (``x.shape[i]``), its -1 is numpy's."""
    p = code.params()
    dims = list(proto_shape(p.get("shape", {})))
    ndim = len(code.shape)
    axis, num_axes = int(p.get("axis", 0)), int(p.get("num_axes", -1))
    start = axis if axis >= 0 else ndim + axis + 1
    end = ndim if num_axes == -1 else start + num_axes
    x = _caffe_view(code, code.x, ndim)
    if x != code.x:
        code.assign(x)
        x = code.tops[0]
    parts = [f"{x}.shape[{i}]" for i in range(start)]
    parts += [f"{x}.shape[{start + i}]" if d == 0 else str(d) for i, d in enumerate(dims)]
    parts += [f"{x}.shape[{i}]" for i in range(end, ndim)]
    shaped = f"{x}.reshape({', '.join(parts)})" if len(parts) != 1 else f"{x}.reshape({parts[0]},)"
    code.assign(_stored(code, shaped, len(code.out_shape)))


@_emits("Permute")
def permute(code: FlaxCode) -> None:
    """Caffe's axis order; on a 4-D tensor composed with the NHWC <-> NCHW views into one transpose."""
    ndim = len(code.shape)
    order = full_order(code.layer, ndim)
    if ndim == 4:  # NHWC top axis j is Caffe top axis (0, 2, 3, 1)[j], i.e. Caffe bottom axis order[that]
        order = [nhwc_axis(order[(0, 2, 3, 1)[j]], 4) for j in range(4)]
    code.assign(code.x if order == sorted(order) else f"jnp.transpose({code.x}, {tuple(order)})")


@_emits("Crop")
def crop(code: FlaxCode) -> None:
    """The window at Caffe's offsets, as large as the second bottom along each axis from ``axis`` on."""
    if len(code.bottoms) != 2:
        raise NotGenerated(f"Crop takes 2 bottoms, this one has {len(code.bottoms)}")
    reference = code.layer.bottom_shapes[1]
    assert reference is not None
    ndim = len(code.shape)
    offsets = crop_offsets(code.layer, code.shape, reference)
    axis = axis_index(code.layer, code.params().get("axis", 2), ndim)
    ref = code.bottoms[1]
    index = [""] * ndim
    for i, o in enumerate(offsets):
        at = nhwc_axis(i, ndim)
        index[at] = ":" if i < axis else f"{o}:{o} + {ref}.shape[{at}]" if o else f":{ref}.shape[{at}]"
    code.assign(f"{code.x}[{', '.join(index)}]")


# ---------------------------------------------------------------------------- lrn, normalize, interp, prior_box


@_emits("LRN")
def lrn(code: FlaxCode) -> None:
    """ACROSS_CHANNELS and WITHIN_CHANNEL as helpers (Flax has no LRN), of a 4-D input."""
    p = code.params()
    if len(code.shape) != 4:
        raise NotGenerated(f"LRN of a {len(code.shape)}-D input")
    size = int(p.get("local_size", 5))
    alpha, beta = number(p.get("alpha", 1.0)), number(p.get("beta", 0.75))
    region = p.get("norm_region", "ACROSS_CHANNELS")
    region = {0: "ACROSS_CHANNELS", 1: "WITHIN_CHANNEL"}.get(region, str(region))
    if region == "ACROSS_CHANNELS":
        code.helpers.add("lrn_across_channels")
        code.assign(f"lrn_across_channels({code.x}, {size}, alpha={alpha}, beta={beta}, k={number(p.get('k', 1.0))})")
    elif region == "WITHIN_CHANNEL":
        code.helpers.add("lrn_within_channel")
        code.assign(f"lrn_within_channel({code.x}, {size}, alpha={alpha}, beta={beta})")
    else:
        raise NotGenerated(f"norm_region {region}")


@_emits("Normalize")
def normalize(code: FlaxCode) -> None:
    p = code.params()
    if len(code.shape) != 4:
        raise NotGenerated(f"Normalize of a {len(code.shape)}-D bottom (generated for 4-D ones)")
    across, shared = bool(p.get("across_spatial", True)), bool(p.get("channel_shared", True))
    options = ("" if across else ", across_spatial=False") + ("" if shared else ", channel_shared=False")
    weight = _f32(code.layer.blobs[0]).reshape(-1)[: 1 if shared else None]
    module = code.module(f"Normalize({code.shape[1]}{options}, eps={number(p.get('eps', 1e-10))})",
                         [("params", "scale", weight)], "Normalize")
    code.assign(f"{module}({code.x})")


@_emits("Interp")
def interp(code: FlaxCode) -> None:
    """`caffe_interp`, with the size rule ``InterpLayer::Reshape`` picks from the params given."""
    p = code.params()
    if len(code.bottoms) != 1 or len(code.shape) != 4:
        raise NotGenerated("an Interp of other than one 4-D bottom")
    given = {key for key in ("height", "width", "zoom_factor", "shrink_factor") if p.get(key) is not None}

    def last(key: str) -> int:
        return ints(p.get(key))[-1]

    options = []
    if "shrink_factor" in given:
        options.append(f"shrink={last('shrink_factor')}")
    if "zoom_factor" in given:
        options.append(f"zoom={last('zoom_factor')}")
    if not options:
        options.append(f"size=({last('height')}, {last('width')})")
    for key in ("pad_beg", "pad_end"):
        if ints(p.get(key)) and last(key):
            options.append(f"{key}={last(key)}")
    code.helpers.add("caffe_interp")
    code.assign(f"caffe_interp({code.x}, {', '.join(options)})")


@_emits("PriorBox")
def prior_box(code: FlaxCode) -> None:
    """The priors for the prototxt's sizes, computed now by the reference's own PriorBox (a constant variable)."""
    shapes = code.layer.bottom_shapes
    bottoms = [np.zeros(shape, np.float32) for shape in shapes]  # type: ignore[arg-type]
    (priors,) = layer_type("PriorBox").forward(code.layer, bottoms)
    sizes = tuple(tuple(shape[2:]) for shape in shapes)  # type: ignore[index]
    module = code.module(f"PriorBoxes({tuple(priors.shape)}, sizes={sizes})", [("constants", "priors", priors)],
                         "PriorBoxes")
    code.assign(f"{module}({', '.join(code.bottoms)})")


@_emits("DetectionOutput")
def detection_output(code: FlaxCode) -> None:
    """`caffe_detection_output`: SSD's decode, per-class NMS and keep_top_k in numpy (``ssd_detections``, the rules
    of `caffeport.layers.detection_output` restated) on the concrete values, so the model runs without jax.jit."""
    options = ssd_arguments(code.params(), len(code.bottoms))
    ranks = tuple(len(s) for s in code.layer.bottom_shapes[:3])  # type: ignore[arg-type]
    code.helpers.add("caffe_detection_output")
    code.assign(f"caffe_detection_output({', '.join(code.bottoms[:3])}, ranks={ranks}, {options})")


# ---------------------------------------------------------------------------- embed, recurrent


@_emits("Embed")
def embed(code: FlaxCode) -> None:
    """`CaffeEmbed` on the input in Caffe's order; a 4-D result is stored NHWC like every 4-D top."""
    weights = _weights(code)
    bias = "bias" in weights
    input_dim, num_output = weights["weight"].shape
    module = code.module(f"CaffeEmbed({input_dim}, {num_output}{'' if bias else ', bias=False'})",
                         [("params", name, array) for name, array in weights.items()], "CaffeEmbed")
    code.assign(_stored(code, f"{module}({_caffe_view(code, code.x, len(code.shape))})", len(code.out_shape)))


@_emits("LSTM")
def lstm(code: FlaxCode) -> None:
    """`CaffeLSTM`: the step loop (``jax.lax.scan``) with ``cont`` restarts."""
    if layer_type(code.layer.type).has_static(code.layer):  # type: ignore[attr-defined]
        raise NotGenerated("an LSTM with a static input (x_static)")
    if len(code.shape) == 4:
        raise NotGenerated("an LSTM over a 4-D input")
    weights = _weights(code)
    hidden = int(code.params()["num_output"])
    size = weights["weight_ih"].shape[1]
    module = code.module(f"CaffeLSTM({size}, {hidden})", [("params", name, array) for name, array in weights.items()],
                         "CaffeLSTM")
    tops = code.tops if len(code.tops) == 3 else [code.tops[0], "_", "_"]
    code.body.append(f"{', '.join(tops)} = {module}({', '.join(code.bottoms)})")


# ---------------------------------------------------------------------------- the file


class _Names(Names):
    def __init__(self) -> None:
        super().__init__(_TAKEN)


@dataclass
class FlaxModel:
    """What `generate` made: the file's source, its variables tree, what was stubbed."""

    source: str
    class_name: str
    #: {"params": {module: {name: array}}, "batch_stats": {...}, ("constants": {...})}
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    name_map: dict[str, str] = field(default_factory=dict)
    stubs: list[str] = field(default_factory=list)
    sources: list[tuple[str, str]] = field(default_factory=list)
    inputs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    #: the layers computed with numpy on concrete values (DetectionOutput): the model cannot run under jax.jit
    eager_only: list[str] = field(default_factory=list)

    def jit_note(self) -> str:
        """Why this model runs without jax.jit, or "" when it runs under it."""
        if not self.eager_only:
            return ""
        return (f"{', '.join(self.eager_only)} (DetectionOutput) gives as many rows as it detects, computed with "
                "numpy on the concrete values: call module.apply without jax.jit (jax.jit raises a TypeError "
                "saying so).")


def _class_name(net: Net) -> str:
    words = re.findall(r"[A-Za-z0-9]+", net.name or "")
    name = "".join(w[:1].upper() + w[1:] for w in words)
    if not name or not name[0].isalpha() or keyword.iskeyword(name) or name in _TAKEN or hasattr(builtins, name):
        return "CaffeModel"
    return name


def _shape_text(shape: Any) -> str:
    return "?" if shape is None else str(tuple(shape))


def _buffer_names(layer: Layer) -> list[str]:
    """A stubbed layer's blob names: the backend's weight names where they are identifiers, else ``blob<i>``."""
    names = list(layer.weight_names[: len(layer.blobs)])
    names += [f"blob{i}" for i in range(len(names), len(layer.blobs))]
    return [n if n.isidentifier() else f"blob{i}" for i, n in enumerate(names)]


def _stub(code: FlaxCode, reason: str) -> FlaxCode:
    """The layer as a `NotGenerated` submodule: calling it raises NotImplementedError naming layer, type, params."""
    layer = code.layer
    stub = FlaxCode(layer=layer, caffe_name=code.caffe_name, attr=code.attr, bottoms=code.bottoms, tops=code.tops)
    params = repr(_stub_params(layer))  # one logical line: `_wrapped` cuts it at its commas
    stub.init.append(f"self.{code.attr} = NotGenerated({_q(code.caffe_name)}, {_q(layer.type)}, {_q(reason)}, "
                     f"{params})")
    stub.helpers.add("NotGenerated")
    stub.leaves = [("params", (name,), np.asarray(blob)) for name, blob in zip(_buffer_names(layer), layer.blobs)]
    stub.body.append(f"{', '.join(code.tops)} = self.{code.attr}({', '.join(code.bottoms)})")
    return stub


def _add_leaves(model: FlaxModel, attr: str, leaves: list[Leaf]) -> None:
    for collection, path, array in leaves:
        node = model.variables.setdefault(collection, {}).setdefault(attr, {})
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = array


def generate(net: Net) -> FlaxModel:
    """The ``model.py`` of ``net`` (transformed with the torch backend) and the variables it loads."""
    if not net.inputs or any(not shape for shape in net.inputs.values()):
        raise CaffeportError("flax-code needs the net's input shapes: give the deploy prototxt")
    caffe_names = {new: old for old, new in net.conversion.name_map.items()}
    attrs, variables = _Names(), _Names()
    current: dict[str, str] = {name: variables(name) for name in net.inputs}
    init: list[str] = []
    body: list[str] = []
    helpers: set[str] = set()
    model = FlaxModel(source="", class_name=_class_name(net), inputs=dict(net.inputs),
                      variables={"batch_stats": {}, "params": {}})
    for layer in net.layers:
        caffe_name = caffe_names.get(layer.name, layer.name)
        if _fed(net, layer):
            body.extend(f"keep({_q(f'{caffe_name}/{top}')}, {current[top]})" for top in layer.tops)
            continue
        if layer.type in _SPLIT_OFF:
            continue  # written with the (stubbed) layer it was split from
        missing = [b for b in layer.bottoms if b not in current]
        if missing:
            raise CaffeportError(f"layer {caffe_name!r}: bottom {', '.join(map(repr, missing))} is produced by no "
                                 "earlier layer and is not a net input")
        code = FlaxCode(layer=layer, caffe_name=caffe_name, attr=attrs(caffe_name),
                        bottoms=[current[b] for b in layer.bottoms],
                        tops=[current.get(t) or variables(t) for t in layer.tops])
        reason = emit(code, FLAX_EMITTERS.get(layer.type), "Flax")
        if reason is not None:
            code = _stub(code, reason)
            model.stubs.append(f"{caffe_name!r} ({layer.type}): {reason}")
        for top, var in zip(layer.tops, code.tops, strict=True):
            current[top] = var
        body.append("")
        ins = ", ".join(f"{b} {_shape_text(s)}" for b, s in zip(layer.bottoms, layer.bottom_shapes))
        outs = ", ".join(f"{t} {_shape_text(s)}" for t, s in zip(layer.tops, layer.top_shapes))
        shown_type = "Scale" if layer.type == "FusedScale" else layer.type
        body.append(_comment(f"{caffe_name} ({shown_type}): {ins} -> {outs}"))
        body.extend(code.body)
        if code.recorded:
            body.extend(f"keep({_q(f'{caffe_name}/{top}')}, {var})" for top, var in zip(layer.tops, code.tops))
        init.extend(code.init)
        helpers |= code.helpers
        if "caffe_detection_output" in code.helpers:
            model.eager_only.append(repr(caffe_name))
        if code.init and code.attr != caffe_name:
            model.name_map[caffe_name] = code.attr
        _add_leaves(model, code.attr, code.leaves)
    for layer in net.layers:  # blobs split off a stubbed layer: kept beside it
        if layer.type in _SPLIT_OFF and layer.blobs:
            attr = attrs(layer.name)
            init.append(f"self.{attr} = NotGenerated({_q(layer.name)}, {_q(layer.type)}, "
                        '"split off its Caffe layer", {})')
            _add_leaves(model, attr, [("params", (name,), np.asarray(blob))
                                      for name, blob in zip(_buffer_names(layer), layer.blobs)])
            helpers.add("NotGenerated")
    model.outputs = net_outputs(net)
    model.sources = [(Path(p).name, sha256(p)) for p in (net.prototxt_path, net.caffemodel_path) if p]
    model.source = _file(net, model, init, body, current, closure(helpers))
    return model


def _indented(lines: list[str], depth: int) -> list[str]:
    pad = " " * (4 * depth)
    out = []
    for line in lines:
        for part in line.split("\n"):
            out.extend(_wrapped(pad + part) if part else [""])
    return out


def _nhwc(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[0], *shape[2:], shape[1]) if len(shape) == 4 else tuple(shape)


def _file(net: Net, model: FlaxModel, init: list[str], body: list[str], current: dict[str, str],
          helpers: list[str]) -> str:
    inputs = ", ".join(f"{name} {_nhwc(tuple(shape))}" for name, shape in net.inputs.items())
    outputs = ", ".join(model.outputs)
    sources = "\n".join(f"    {name}  sha256 {digest}" for name, digest in model.sources) or "    (none recorded)"
    stubs = "\n".join(f"    {line}" for line in model.stubs) or "    none"
    usage = textwrap.fill(
        f"``module, variables = load_model()`` gives the module and its variables, read from the weights beside "
        f"this file ({WEIGHTS_FILE}); then ``module.apply(variables, *inputs)`` takes NHWC float32 arrays in "
        f"Caffe's input order ({inputs}) and returns a dict keyed by the net's output tops ({outputs}). "
        "``module.apply(variables, ..., return_all=True)`` also returns every top as ``\"<layer>/<top>\"`` right "
        "after its layer ran, the keys of ``caffeport run --all-layers`` (4-D tops NHWC, others in Caffe's order; "
        "a BatchNorm whose Scale is folded into it is recorded under the Scale's key only). " + model.jit_note(),
        110,
        break_long_words=False, break_on_hyphens=False)
    doc = f'''"""{model.class_name}: the Caffe net {net.name or '(unnamed)'!r} as a Flax linen module (NHWC).

Generated by caffeport {__version__} (``caffeport convert -f flax-code``).

Source files:
{sources}

{usage}

Layers without generated code (calling them raises NotImplementedError):
{stubs}

This file needs only jax, flax and numpy.
"""'''
    signature = ", ".join(f"{current[name]}: jax.Array" for name in net.inputs)
    returned = ", ".join(f"{_q(top)}: {current[top]}" for top in model.outputs if top in current)
    lines = [doc, "", "from __future__ import annotations", "", "from pathlib import Path", "",
             "import flax.linen as nn", "import jax", "import jax.numpy as jnp", "import numpy as np",
             "from flax.serialization import msgpack_restore", "",
             f'WEIGHTS = Path(__file__).with_name("{WEIGHTS_FILE}")',
             "#: Caffe layer name -> submodule name, where the Caffe name is not a Python identifier",
             *_wrapped(f"NAME_MAP: dict[str, str] = {model.name_map!r}"), ""]
    for name in helpers:
        lines += ["", HELPERS[name]]
    lines += ["", '''def _discard(key: str, value: jax.Array) -> None:
    """Where ``keep`` sends the tops when ``return_all`` is not asked for."""''', "", "",
              f"class {model.class_name}(nn.Module):",
              f'    """The Caffe net {net.name or "(unnamed)"!r} in NHWC: one submodule per weighted Caffe layer.',
              "", "    The shapes in the comments are Caffe's (NCHW).", '    """', "",
              "    def setup(self) -> None:"]
    lines += _indented(init, 2) if init else ["        pass"]
    lines += ["", *_wrapped(f"    def __call__(self, {signature}, *, return_all: bool = False"
                                     f") -> dict[str, jax.Array]:"),
              "        tops: dict[str, jax.Array] = {}",
              "        keep = tops.__setitem__ if return_all else _discard"]
    lines += _indented(body, 2)
    lines += ["", *_wrapped(f"        outputs = {{{returned}}}"),
              "        return {**outputs, **tops} if return_all else outputs", "", "",
              f'''def load_variables(weights: str | Path = WEIGHTS) -> dict:
    """The variables ``{model.class_name}().apply`` takes: ``{{"params": ..., "batch_stats": ...}}``, read from the
    msgpack file ``flax.serialization.msgpack_serialize`` would write for them."""
    return msgpack_restore(Path(weights).read_bytes())


def load_model(weights: str | Path = WEIGHTS) -> tuple[{model.class_name}, dict]:
    """``(module, variables)``: call ``module.apply(variables, *inputs)`` (NHWC), or ``module.bind(variables)``."""
    return {model.class_name}(), load_variables(weights)''', ""]
    text = "\n".join(lines)
    code_text = text[len(doc):]
    for module, line in (("np", "import numpy as np\n"), ("jnp", "import jax.numpy as jnp\n")):
        if not re.search(rf"\b{module}\.", code_text):
            text = text.replace(line, "", 1)
    return re.sub(r"\n{4,}", "\n\n\n", text)


def readme(model: FlaxModel) -> str:
    """The folder's short README: what is there, how to load it, what was not generated."""
    sources = "\n".join(f"- `{name}`: sha256 `{digest}`" for name, digest in model.sources)
    stubs = "\n".join(f"- {line}" for line in model.stubs) or "none"
    nhwc = [_nhwc(tuple(s)) for s in model.inputs.values()]
    return f"""# {model.class_name}

Generated by caffeport {__version__} (`caffeport convert -f flax-code`) from:

{sources}

- `model.py`: the Flax linen module, standalone (imports only jax, flax and numpy);
- `{WEIGHTS_FILE}`: its variables (`{{"params", "batch_stats"}}`, keyed by the submodule names), in
  `flax.serialization.msgpack_serialize`'s format; `load_variables()` reads them.

`load_model()` returns `(module, variables)`, the module unbound: call it through `module.apply`.
{model.jit_note()}

```python
import numpy as np
from model import load_model

module, variables = load_model()
outputs = module.apply(variables, {", ".join(f"np.zeros({s}, np.float32)" for s in nhwc)})
```

Inputs are NHWC (channels last) in Caffe's input order: {", ".join(f"`{n}` {s}" for n, s in zip(model.inputs, nhwc))}.
Outputs: a dict keyed by the net's output tops ({", ".join(f"`{o}`" for o in model.outputs)}), 4-D ones NHWC;
`module.apply(variables, ..., return_all=True)` adds every top as `"<layer>/<top>"`.

Layers without generated code (calling them raises NotImplementedError):

{stubs}
"""


def write_weights(model: FlaxModel, path: Path) -> None:
    """The variables as Flax's msgpack (sorted keys, ndarray extension type), by the ``-f flax`` writer."""
    from caffeport.exporters.flax import FlaxLeaf, flax_tree
    from caffeport.exporters.msgpack_stream import Stream
    from caffeport.ir.file import import_msgpack

    msgpack = import_msgpack("the flax-code format")

    def leaves(tree: dict[str, Any]) -> dict[str, Any]:
        return {key: leaves(value) if isinstance(value, dict)
                else FlaxLeaf(value, np.dtype(value.dtype).newbyteorder("<")) for key, value in tree.items()}

    with open(path, "wb") as handle:
        flax_tree(Stream(handle, msgpack), leaves(model.variables))

